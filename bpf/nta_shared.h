/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * nta_shared.h - the contract between the XDP programs in bpf/, the C core
 * in allocator/ and the Python harness.
 *
 * Plain fixed-width types only, no pointers: every layout here is read by
 * three compilers (BCC's clang for BPF, gcc for the C core, cffi/ctypes for
 * Python). Any change to a layout bumps NTA_SHARED_VERSION.
 */
#ifndef NTA_SHARED_H
#define NTA_SHARED_H

#ifndef NTA_CDEF /* the Python binding reads this header, preprocessed, with cffi */
#include <linux/types.h>
#endif

#define NTA_SHARED_VERSION 6

/* The harness compiles its BPF programs with -DNTA_EXPECT_SHARED_VERSION=<the version its C modules
 * were built with>: a binding built from another version of this header cannot read these layouts. */
#if defined(NTA_EXPECT_SHARED_VERSION) && NTA_EXPECT_SHARED_VERSION != NTA_SHARED_VERSION
#error "bpf/nta_shared.h is not the version the harness's C modules were built from: run 'make build'"
#endif

/*
 * Verdicts the XDP program can be built with (-DNTA_ACTION=...). The values
 * are the kernel's enum xdp_action, repeated so user space need not include
 * <linux/bpf.h>.
 */
#define NTA_ACT_ABORTED 0
#define NTA_ACT_DROP    1
#define NTA_ACT_PASS    2

/*
 * Per-CPU counters kept by the XDP program, one slot (index
 * NTA_STATS_KEY) in a BPF_PERCPU_ARRAY. first_ns/last_ns are
 * bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the first and last packet this CPU
 * saw, so user space can compute the rate at the XDP hook itself.
 */
#define NTA_STATS_KEY 0

struct nta_xdp_stats {
	__u64 packets;
	__u64 bytes;      /* whole frame, all fragments */
	__u64 first_ns;
	__u64 last_ns;
};

/*
 * Per-packet metadata record, XDP -> controller, through a BPF ring buffer
 * (nta_xdp_meta.c). Fixed size.
 */
struct nta_meta {
	__u64 ts_ns;        /* bpf_ktime_get_ns() at the hook */
	__u32 len;          /* frame length */
	__u32 ifindex;      /* ingress ifindex */
	__u32 rx_queue;     /* RX queue index */
	__u32 flow_hash;    /* hash of addresses, protocol and ports */
	__u16 vlan[2];      /* outer and inner VLAN TCI, 0 when absent */
	__u16 ethertype;    /* after VLAN tags, host order */
	__u8  l4_proto;     /* IPPROTO_*, 0 when not IP */
	__u8  flags;        /* NTA_META_* */
	__u16 sport;        /* host order, 0 when not TCP/UDP */
	__u16 dport;
	__u32 pad;
};

#define NTA_META_L3        0x01 /* IPv4 or IPv6 header parsed */
#define NTA_META_L4        0x02 /* TCP or UDP ports parsed */
#define NTA_META_FRAGMENT  0x04 /* an IPv4 fragment (ports absent) */
#define NTA_META_TRUNCATED 0x08 /* a header ran past the frame */
#define NTA_META_PERMIT    0x10 /* the frame passed the --permit filter: it may take the reserve */

/*
 * With AF_XDP, the mark rides in the frame's XDP metadata (bpf_xdp_adjust_meta), the 4 bytes the kernel
 * copies in front of the frame into the socket's buffer: NTA_XSK_MARK, ORed with NTA_META_PERMIT for a
 * permitted frame. The buffer has room for it (ctl.h: NTA_XSK_META_ROOM) and is cleared before it is
 * posted, so a buffer without the mark holds a frame the program did not mark.
 */
#define NTA_XSK_MARK 0x4e544100u /* "NTA", then the flags */

/*
 * Why the controller dropped a frame: one counter each, counted in one place (harness/csrc/ctl.c), in
 * the summary, the JSON and the interval lines by these names (lower case, without the prefix).
 */
enum nta_drop_reason {
	NTA_DROP_NOMEM = 0,             /* no ordinary memory (the pool's budget), and not permitted the reserve */
	NTA_DROP_FLOW_LIMIT = 1,        /* its flow holds its limit already (a socket's receive buffer) */
	NTA_DROP_RESERVE_EXHAUSTED = 2, /* permitted, ordinary memory out, and the reserve too */
	NTA_DROP_NOT_PERMITTED = 3,     /* landed in reserve memory (a buffer posted before its frame was
	                                 * known) but not permitted: the kernel's pfmemalloc drop */
	NTA_DROP_REASONS = 4,
};

/* Per-CPU counters of one RX queue (a slot a queue; a metadata ring a queue). */
struct nta_queue_stats {
	__u64 packets;      /* frames XDP saw on this queue */
	__u64 bytes;        /* and their bytes */
	__u64 submitted;    /* records handed to the queue's metadata ring (nta_xdp_meta); frames
	                     * redirected to the queue's AF_XDP socket (nta_xdp_xsk) */
	__u64 lost;         /* reserve failed: the ring was full; no socket on the queue */
	__u64 permitted;    /* frames the --permit filter passed (0 without one) */
	__u64 pad;
};

/*
 * Replay timing where the frames land: per RX queue (one sender feeds one queue, and a queue's NAPI runs
 * on one CPU at a time), each frame's gap from the one before it against the gap its sender's schedule
 * called for (gaps[base + k], k its place in the sender's list of frames, wrapping each loop; gaps[base]
 * is from a loop's last frame to the next loop's first). The error's size goes into a histogram of
 * NTA_TIMING_BUCKETS log-linear buckets (nta_timing_bucket); the state keeps the first and last arrival
 * and the schedule's sum for the drift at the end. The XDP programs keep it with -DNTA_TIMING; the
 * controller from its records. nta_timing_step() is the one computation both run.
 */
#define NTA_TIMING_SUB 16       /* buckets per power of two of ns */
#define NTA_TIMING_BUCKETS 768  /* up to 2^47 ns: the last bucket takes all larger */

struct nta_timing {
	__u32 base, count;  /* the queue's sender's gaps (count 0: not timed) */
	__u32 k;            /* the next frame's place in them */
	__u32 pad;
	__u64 frames;       /* frames timed */
	__u64 first_ns, last_ns;
	__u64 scheduled_ns; /* the gaps the schedule called for between first and last, summed */
	__u64 max_err_ns;   /* the largest gap error, exactly */
	__s64 err_sum_ns;   /* the gap errors, signed, summed (last - first - scheduled) */
};

/*
 * The XDP live-frames replayer (nta_xdp_gen.c): one sender per CPU, its state
 * its CPU's copy of the per-CPU nta_gen_state. A frame of nta_gen_frames is this
 * header, then NTA_GEN_FRAME_MAX bytes (of which len are the frame's).
 */
struct nta_gen_state {
	__u32 base;   /* where its list of frames starts in nta_gen_index */
	__u32 count;  /* how many it has (0: it sends nothing) */
	__u32 next;   /* the one the next run sends, from 0 */
	__u32 loop;   /* the loop it is in, from 0 (--unique-flows moves each loop's addresses by it) */
	__u64 runs;   /* runs of the program: frames the kernel made for it */
	__u64 sent;   /* frames written and redirected out of the device */
	__u64 bytes;  /* their bytes */
	__u64 failed; /* frames not written: a bad entry, or a length the kernel refused */
	__u64 unchanged; /* --unique-flows: frames of a loop after the first sent as they are (not IP) */
};

/* A paced xdp sender's ring of due times in nta_gen_due (nta_xdp_gen.c): its runs per call, at most. */
#define NTA_GEN_PACE_DEPTH 256

struct nta_gen_frame_hdr {
	__u32 len;
	__u16 l3;    /* where its IP header starts (after the Ethernet header and any VLAN tags) */
	__u8 ipver;  /* 4 or 6 with a whole IP header there, else 0 (--unique-flows leaves it as it is) */
	__u8 pad;
};


#ifndef NTA_CDEF
/* One step of the flow hash (murmur3's mixing) over a 32-bit word: the metadata program hashes a frame's
 * addresses and ports with it, and the controller a frame it received itself, the same way. */
static inline __attribute__((always_inline)) __u32 nta_mix(__u32 h, __u32 v)
{
	v *= 0xcc9e2d51;
	v = (v << 15) | (v >> 17);
	v *= 0x1b873593;
	h ^= v;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

/* The bucket of a gap error of e ns: NTA_TIMING_SUB linear ones below NTA_TIMING_SUB ns, then
 * NTA_TIMING_SUB per power of two (a twentieth-ish of the value each). */
static inline __attribute__((always_inline)) __u32 nta_timing_bucket(__u64 e)
{
	if (e < NTA_TIMING_SUB)
		return (__u32)e;
	__u32 log = 0; /* floor(log2(e)), >= 4: by halves (BCC's LLVM 14 cannot lower a count of leading zeros) */
	__u64 v = e;
	if (v >> 32) v >>= 32, log += 32;
	if (v >> 16) v >>= 16, log += 16;
	if (v >> 8) v >>= 8, log += 8;
	if (v >> 4) v >>= 4, log += 4;
	if (v >> 2) v >>= 2, log += 2;
	if (v >> 1) log += 1;
	__u32 b = (log - 3) * NTA_TIMING_SUB + (__u32)((e >> (log - 4)) & (NTA_TIMING_SUB - 1));
	return b < NTA_TIMING_BUCKETS ? b : NTA_TIMING_BUCKETS - 1;
}

/* A frame arrived at now on a timed queue; gap: what its sender's schedule called for since the frame
 * before it. Returns the bucket of its gap error, or -1 for the first frame (no gap yet). The caller
 * moves k on (the gap of the next frame) and counts the bucket. */
static inline __attribute__((always_inline)) int nta_timing_step(struct nta_timing *t, __u64 now, __u64 gap)
{
	int b = -1;

	if (t->frames) {
		__u64 was = t->last_ns, real = now > was ? now - was : 0;
		__s64 err = (__s64)real - (__s64)gap;
		__u64 mag = err < 0 ? (__u64)-err : (__u64)err;
		t->scheduled_ns += gap;
		t->err_sum_ns += err;
		if (mag > t->max_err_ns)
			t->max_err_ns = mag;
		b = (int)nta_timing_bucket(mag);
	} else {
		t->first_ns = now;
	}
	t->last_ns = now;
	t->frames++;
	t->k = t->k + 1 == t->count ? 0 : t->k + 1;
	return b;
}

/*
 * --unique-flows, as tcpreplay's --unique-ip does it (send_packets.c, fast_edit_packet): in loop k (0:
 * the capture as it is) the two addresses, an IPv4 header's or the low 32 bits of an IPv6 header's, in
 * host order, move k apart: if dst > src, src - k and dst + k, else src + k and dst - k, and one of
 * them one more towards the other when just one of them wrapped. The sum of the two, and with it the
 * ones'-complement sum every checksum over them takes (IPv4's header, TCP's and UDP's pseudo-header),
 * is what it was: no checksum needs changing. (RFC 1624's incremental update of each is zero.)
 */
static inline __attribute__((always_inline)) void nta_unique_ip(__u32 *src, __u32 *dst, __u32 k)
{
	__u32 s0 = *src, d0 = *dst, s = s0, d = d0;

	if (d0 > s0) {
		s -= k;
		d += k;
		if (s > s0 && d > d0)
			s--;
		else if (d < d0 && s < s0)
			d++;
	} else {
		s += k;
		d -= k;
		if (d > d0 && s > s0)
			d--;
		else if (s < s0 && d < d0)
			s++;
	}
	*src = s;
	*dst = d;
}

_Static_assert(sizeof(struct nta_xdp_stats) == 32, "nta_xdp_stats layout");
_Static_assert(sizeof(struct nta_timing) == 64, "nta_timing layout");
_Static_assert(sizeof(struct nta_gen_state) == 56, "nta_gen_state layout");
_Static_assert(sizeof(struct nta_meta) == 40, "nta_meta layout");
_Static_assert(sizeof(struct nta_queue_stats) == 48, "nta_queue_stats layout");
#endif

#endif /* NTA_SHARED_H */
