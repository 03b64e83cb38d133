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

struct nta_replay {
	/* in */
	int fd;                   /* AF_PACKET socket, bound to the sending interface */
	uint32_t mode;            /* NTA_REPLAY_TOPSPEED, _PPS, _MBPS, _TIMING */
	uint32_t method;          /* NTA_REPLAY_SENDMMSG or NTA_REPLAY_TX_RING */
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
	uint32_t batch;           /* frames per sendmmsg or send, 1..1024 */
	/* out: the sender writes them with relaxed atomic stores */
	uint64_t sent;            /* frames the kernel took */
	uint64_t bytes;
	uint64_t failed;          /* frames given up on (a send error other than the ones below) */
	uint64_t retried_enobufs; /* sendmmsg calls retried on ENOBUFS (device queue full) */
	uint64_t retried_eagain;
	uint64_t calls;           /* sendmmsg calls */
	int32_t last_errno;       /* of the last failed frame */
	int32_t stop;             /* set to 1 (atomically) to stop early */
	uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC */
};

/* Send; returns 0, or -errno when it could not start (a bad argument). */
int nta_replay_run(struct nta_replay *r);

#endif /* NTA_TRAFFIC_H */
