/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * traffic.h - the harness's C on the traffic path, built into
 * harness._traffic_c (no allocator in it): the built-in replayer's send loop
 * (replay.c) and loading the XDP programs frags-aware (bpfload.c).
 *
 * Error rule: int functions return >= 0 or a negative errno.
 */
#ifndef NTA_TRAFFIC_H
#define NTA_TRAFFIC_H

#ifndef NTA_CDEF
#include <stddef.h>
#include <stdint.h>
#endif /* NTA_TRAFFIC_H */

/*
 * Load an XDP program from BCC's compiled, map-relocated instructions with
 * BPF_F_XDP_HAS_FRAGS (which BCC cannot ask for): native XDP on veth then
 * takes MTUs past 3506. Returns the program's fd, or -errno with the
 * verifier's log (its last lines) in log.
 */
int nta_xdp_load_frags(const void *insns, size_t insn_bytes, const char *name, char *log, size_t log_len);
/* A BPF ring buffer map of ``bytes`` (a power of two of pages) named ``name``, for a program's array of
 * rings (an RX queue's metadata ring beside the program's own). Returns its fd, or -errno. */
int nta_ringbuf_map_create(const char *name, uint32_t bytes);

/*
 * The built-in replayer: frames preloaded in memory, sent on an AF_PACKET
 * socket with sendmmsg(2) or a PACKET_TX_RING in batches, paced or at top
 * speed. The caller (harness/replay.py) opens and binds the socket in the
 * sender's namespace and fills the "in" half; nta_replay_run() sends until
 * the loops, the packet limit or the duration are done, or until ->stop is
 * set from another thread. The "out" half may be read while it runs.
 */
#define NTA_REPLAY_TOPSPEED 0u /* as fast as the socket takes them */
#define NTA_REPLAY_PPS 1u      /* rate = packets per second */
#define NTA_REPLAY_MBPS 2u     /* rate = Mbit/s of frame bytes */
#define NTA_REPLAY_TIMING 3u   /* the capture's own gaps, divided by rate */

#define NTA_REPLAY_SENDMMSG 0u /* a sendmmsg(2) per batch */
#define NTA_REPLAY_TX_RING 1u  /* a PACKET_TX_RING, a send(2) per batch */
#define NTA_REPLAY_XDP 2u      /* BPF_PROG_RUN of nta_xdp_gen with live frames, a call per batch: no skb */

struct nta_replay {
	/* in */
	int fd;                   /* AF_PACKET socket, bound to the sending interface (not NTA_REPLAY_XDP) */
	uint32_t mode;            /* NTA_REPLAY_TOPSPEED, _PPS, _MBPS, _TIMING */
	uint32_t method;          /* NTA_REPLAY_SENDMMSG, _TX_RING or _XDP */
	int prog_fd;              /* NTA_REPLAY_XDP: nta_xdp_gen, loaded, its maps filled */
	int state_fd;             /* NTA_REPLAY_XDP: its nta_gen_state map; this sender's entry is its CPU's */
	int netns_fd;             /* NTA_REPLAY_XDP: the sending device's namespace (entered by this thread), or -1 */
	uint32_t cpu;             /* NTA_REPLAY_XDP: the CPU this sender runs on (pinned by the caller) */
	int due_fd;               /* NTA_REPLAY_XDP, paced: nta_gen_due (the runs wait for their due times), or -1 */
	uint32_t due_cpus;        /* and its CPUs (NTA_GEN_PACE_DEPTH entries each) */
	double rate;
	const uint8_t *blob;      /* the frames, back to back */
	const uint64_t *offsets;  /* per frame: offset in blob */
	const uint32_t *lengths;  /* per frame: bytes */
	const int64_t *rel_ns;    /* per frame: capture time since the first frame */
	const uint32_t *index;    /* NULL: send every frame; else the frames index[0..frames) */
	uint64_t frames;          /* how many this sender sends per loop */
	uint64_t span_ns;         /* a loop's length in capture time (the last frame's rel_ns) */
	uint64_t loops;
	uint64_t limit;           /* packets; 0: none */
	uint64_t duration_ns;     /* 0: none */
	uint32_t batch;           /* frames per sendmmsg or send, 1..1024; runs per BPF_PROG_RUN, 1..65536 */
	uint32_t unique;          /* --unique-flows: loop k's addresses moved k apart (nta_unique_ip) */
	const uint16_t *l3;       /* with unique: per frame, where its IP header starts ... */
	const uint8_t *ipver;     /* ... and 4 or 6 (0: not IP, or too short: sent as it is) */
	/* out: the sender writes them with relaxed atomic stores */
	uint64_t sent;            /* frames the kernel took */
	uint64_t bytes;
	uint64_t failed;          /* frames given up on (a send error other than the ones below) */
	uint64_t retried_enobufs; /* sendmmsg calls retried on ENOBUFS (device queue full) */
	uint64_t retried_eagain;
	uint64_t calls;           /* sendmmsg, send or BPF_PROG_RUN calls */
	uint64_t unchanged;       /* with unique: frames of a loop after the first sent as they are (not IP) */
	uint32_t kernel_batch;    /* the xdp sender: the most frames of a kernel batch (nta_replay_pace_batch) */
	uint32_t pad;
	int32_t last_errno;       /* of the last failed frame */
	int32_t stop;             /* set to 1 (atomically) to stop early */
	uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC */
};

/* Send; returns 0, or -errno when it could not start (a bad argument). */
int nta_replay_run(struct nta_replay *r);
/* The schedule of a paced sender, as gaps: gaps[k] (k of ->frames) is how long after its frame k - 1 the
 * sender sends frame k, and gaps[0] how long after a loop's last frame the next loop's first; the same
 * every loop. Returns ->frames, or -EINVAL for a sender at top speed or with no frames. */
long nta_replay_gaps(const struct nta_replay *r, uint64_t *gaps);
/* The xdp sender, paced: the kernel batch of a call of k frames, due from first to last (ns), a power of two
 * that fits in span ns of the schedule, 1 to 64 and at most k; and the span, from 0 (a frame a batch),
 * widened while the sender falls behind its schedule (replay.c). */
#define NTA_PACE_LATE 4                 /* calls in a row, each further behind, that widen the span */
#define NTA_PACE_SPAN_FIRST_NS 1000ull
#define NTA_PACE_SPAN_MOST_NS 32000ull
struct nta_pace {
	uint64_t span, behind; /* the span; how far behind the last call started */
	uint32_t late, pad;    /* calls in a row that started behind, each further */
};
uint32_t nta_replay_pace_batch(uint64_t first, uint64_t last, uint32_t k, uint64_t span);
/* A call starts at now, its first frame due at first_due: the span its batches take. */
uint64_t nta_replay_pace_step(struct nta_pace *pc, uint64_t now, uint64_t first_due);

/*
 * The XDP live-frames replayer's set-up (xdplive.c). The largest frame a live frame carries on this
 * kernel, probed once with a two-instruction program (BPF_PROG_RUN takes no longer data_in); and the
 * frames of a capture written into nta_gen_frames (values of value_size bytes: struct
 * nta_gen_frame_hdr, then the frame) in batches. Each returns >= 0 or -errno.
 */
int nta_xdp_live_max(void);
/* A device's driver statistics ('ethtool -S'), read on sock (a socket of the device's namespace): up to
 * max of them, their names in names (32 bytes each, NUL-terminated) and values. Returns how many. */
long nta_ethtool_stats(int sock, const char *ifname, char *names, uint64_t *values, size_t max);
long nta_gen_fill(int map_fd, const uint8_t *blob, const uint64_t *offsets, const uint32_t *lengths,
		  const uint16_t *l3, const uint8_t *ipver, uint64_t n, uint32_t value_size);
/* Each sender's list of frames, one after another, written into nta_gen_index (entry i = frames[i]). */
long nta_gen_index_fill(int map_fd, const uint32_t *frames, uint64_t n);

/* An XDP program's verdict (its return value) on each of n frames, by BPF_PROG_RUN once a frame, not
 * live (xdpverdict.c): frame i is blob[offsets[i]], lengths[i] bytes. Returns n, or -errno. */
long nta_xdp_verdicts(int prog_fd, const uint8_t *blob, const uint64_t *offsets, const uint32_t *lengths,
		      uint64_t n, uint32_t *verdicts);

#endif /* NTA_TRAFFIC_H */
