/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_gen.c - the XDP live-frames replayer: run by BPF_PROG_RUN with
 * BPF_F_TEST_XDP_LIVE_FRAMES (never attached), once per frame to send. Each
 * run writes the next frame of its sender's list from a BPF array map into
 * the live frame (its length with bpf_xdp_adjust_tail, its bytes with
 * bpf_xdp_store_bytes: a recycled page keeps what the last run wrote) and
 * redirects it out of the gen end of the veth pair, where the kernel sends
 * it with no skb. Attached (generic) to that device too, where it passes
 * every frame: see below. Compiled by BCC with -D flags:
 *   -DNTA_GEN_FRAMES=N     frames in the capture (entries of nta_gen_frames)
 *   -DNTA_GEN_FRAME_MAX=B  bytes of the largest (the value's data, a multiple of 8)
 *   -DNTA_GEN_INDEX=N      entries of nta_gen_index: every sender's list of frames, one after another
 *   -DNTA_GEN_IFINDEX=I    the device to send out of (in the sender's namespace)
 *   -DNTA_UNIQUE           --unique-flows: in each loop after the first, the frame's addresses move
 *                          apart by the loop's number (nta_shared.h: nta_unique_ip)
 *   -DNTA_GEN_PACE=N       a paced replay (a rate, or the capture's timing): each run first waits for
 *   -DNTA_GEN_CPUS=C       its frame's due time (below); N a power of two, C the possible CPUs
 *
 * Paced, a BPF_PROG_RUN call costs more than a gap at 100 kpps (14 us here: the kernel sets up a page
 * pool for the call and tears it down), so a call per frame cannot time the frames. Instead the sender
 * writes the due times of its next frames (bpf_ktime_get_ns's clock, CLOCK_MONOTONIC) into nta_gen_due
 * (CPU c's ring of N at c * N, by run number; mmapped by the sender: no system call per frame) and makes
 * one call of them; each run spins until its frame is due (one clock read if it is due already). A kernel
 * batch goes to the device when its last run is done: one frame a batch, until the sender falls behind
 * its schedule; then as many as a span of the schedule holds (harness/csrc/replay.c:
 * nta_replay_pace_step). The sender calls a call's set-up early and ends a
 * call where a gap leaves time for the next one's set-up, so a run spins for tens of us at most.
 *
 * A sender owns one CPU (BPF_PROG_RUN's live mode runs with migration off),
 * so its state is that CPU's copy of the per-CPU nta_gen_state: where its
 * list starts in nta_gen_index, how long it is, the next frame, and its
 * counts. (One array indexed by CPU put two senders' counters, written every
 * frame, on one cache line.)
 */
#include <uapi/linux/bpf.h>
#include "nta_shared.h"

struct nta_gen_frame {
	struct nta_gen_frame_hdr h;
	__u8 data[NTA_GEN_FRAME_MAX];
};

BPF_ARRAY(nta_gen_frames, struct nta_gen_frame, NTA_GEN_FRAMES);
BPF_ARRAY(nta_gen_index, __u32, NTA_GEN_INDEX);
BPF_PERCPU_ARRAY(nta_gen_state, struct nta_gen_state, 1);
#ifdef NTA_GEN_PACE
BPF_F_TABLE("array", int, __u64, nta_gen_due, NTA_GEN_PACE * NTA_GEN_CPUS, BPF_F_MMAPABLE);
/* The wait is a bounded loop (bpf_loop's callback is beyond BCC 0.26's loader). The verifier walks each
 * iteration and keeps a branch of each pending: more than 8,192 of them is refused (E2BIG). So 4,096
 * iterations of four clock reads each: about 16,384 reads, 0.3 ms here, beyond any wait the sender
 * asks for; a frame is sent at most three reads past its time. */
#define NTA_GEN_SPIN_ITERS 4096

/* Wait until the due time of run number run of this CPU's sender (none: 0, at once). */
static __always_inline void nta_gen_wait(__u64 run)
{
	int i = (int)(bpf_get_smp_processor_id() * NTA_GEN_PACE + (run & (NTA_GEN_PACE - 1)));
	__u64 *due = nta_gen_due.lookup(&i);

	if (!due)
		return;
	__u64 t = *due;
	if (bpf_ktime_get_ns() >= t) /* due already: one clock read, not the loop's four */
		return;
	/* every way out of the loop leaves the same state (n = 0), so the verifier walks the rest of the
	 * program once, not once per iteration the loop might end at */
	for (__u32 n = NTA_GEN_SPIN_ITERS; n;) {
		bpf_ktime_get_ns();
		bpf_ktime_get_ns();
		bpf_ktime_get_ns();
		n = bpf_ktime_get_ns() >= t ? 0 : n - 1;
	}
}
#endif

int nta_xdp_gen(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct nta_gen_state *s;

	/* The harness also attaches this program (generic) to the device it sends out of, only to keep it
	 * in the kernel's XDP dispatcher: a BPF_PROG_RUN of a program not in it adds and removes it each
	 * call, 24 ms of text patching. A frame that really arrived there is not for it. */
	if (ctx->ingress_ifindex == NTA_GEN_IFINDEX)
		return XDP_PASS;
	s = nta_gen_state.lookup(&key);
	if (!s)
		return XDP_ABORTED;
#ifdef NTA_GEN_PACE
	nta_gen_wait(s->runs);
#endif
	s->runs++;
	if (!s->count) /* no list: nothing to send (the probe of the kernel's limits) */
		return XDP_DROP;
	__u32 slot = s->base + s->next, loop = s->loop;
	if (s->next + 1 >= s->count) {
		s->next = 0;
		s->loop++;
	} else {
		s->next++;
	}
	__u32 *fi = nta_gen_index.lookup(&slot);
	if (!fi) {
		s->failed++;
		return XDP_DROP;
	}
	struct nta_gen_frame *f = nta_gen_frames.lookup(fi);
	if (!f) {
		s->failed++;
		return XDP_DROP;
	}
	__u64 len = f->h.len; /* 64 bits: no zero-extending copy for a check to land on */
	/* two checks the compiler may not fold into one (len - 14 > MAX - 14, on a copy): the verifier
	 * must see both bounds on len itself, the length bpf_xdp_store_bytes reads */
	if (len > NTA_GEN_FRAME_MAX) {
		s->failed++;
		return XDP_DROP;
	}
	asm volatile("" : "+r"(len));
	if (len < 14) {
		s->failed++;
		return XDP_DROP;
	}
	int have = (int)bpf_xdp_get_buff_len(ctx); /* not data_end - data: no arithmetic on pkt_end */
	if (bpf_xdp_adjust_tail(ctx, (int)len - have) || bpf_xdp_store_bytes(ctx, 0, f->data, len)) {
		s->failed++;
		return XDP_DROP;
	}
#ifdef NTA_UNIQUE
	if (loop && f->h.ipver) {
		__u32 so = f->h.l3 + (f->h.ipver == 4 ? 12 : 20), dof = f->h.l3 + (f->h.ipver == 4 ? 16 : 36), a, b;
		if (bpf_xdp_load_bytes(ctx, so, &a, 4) || bpf_xdp_load_bytes(ctx, dof, &b, 4)) {
			s->failed++;
			return XDP_DROP;
		}
		a = bpf_ntohl(a), b = bpf_ntohl(b);
		nta_unique_ip(&a, &b, loop);
		a = bpf_htonl(a), b = bpf_htonl(b);
		if (bpf_xdp_store_bytes(ctx, so, &a, 4) || bpf_xdp_store_bytes(ctx, dof, &b, 4)) {
			s->failed++;
			return XDP_DROP;
		}
	} else if (loop) {
		s->unchanged++;
	}
#else
	(void)loop;
#endif
	s->sent++;
	s->bytes += len;
	return bpf_redirect(NTA_GEN_IFINDEX, 0);
}
