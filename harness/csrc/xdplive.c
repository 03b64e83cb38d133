// SPDX-License-Identifier: GPL-2.0-only
/*
 * xdplive.c - the XDP live-frames replayer's set-up (see traffic.h): what
 * the kernel lets a live frame carry, and the capture's frames written into
 * the program's map. The send loop is replay.c's (NTA_REPLAY_XDP).
 */
#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nta_shared.h"
#include "traffic.h"

#define FILL_BATCH 256u

int nta_xdp_live_max(void)
{
	static int max;
	static char frame[1 << 13];
	/* r0 = XDP_DROP; exit */
	const struct bpf_insn drop[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_DROP },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	unsigned lo = 14, hi = sizeof(frame) + 1;
	int fd, err = 0;

	if (max)
		return max;
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "nta_xdp_probe", "GPL", drop, 2, NULL);
	if (fd < 0)
		return -errno;
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame, .data_size_in = lo, .repeat = 1,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES);
	if (bpf_prog_test_run_opts(fd, &o)) { /* no live frames at all (before 5.18) */
		err = -errno;
		goto out;
	}
	while (lo + 1 < hi) { /* the largest data_in it takes */
		o.data_size_in = (lo + hi) / 2;
		o.data_size_out = 0; /* libbpf wrote back the last call's: sent again, it is refused (ENOSPC) */
		if (bpf_prog_test_run_opts(fd, &o))
			hi = o.data_size_in;
		else
			lo = o.data_size_in;
	}
	max = (int)lo;
out:
	close(fd);
	return err ? err : max;
}

long nta_gen_fill(int map_fd, const uint8_t *blob, const uint64_t *offsets, const uint32_t *lengths,
		  const uint16_t *l3, const uint8_t *ipver, uint64_t n, uint32_t value_size)
{
	uint8_t *values = calloc(FILL_BATCH, value_size);
	uint32_t keys[FILL_BATCH];
	long err = 0;

	if (!values)
		return -ENOMEM;
	for (uint64_t i = 0; i < n && !err;) {
		uint32_t k = 0;
		for (; k < FILL_BATCH && i < n; k++, i++) {
			struct nta_gen_frame_hdr *h = (struct nta_gen_frame_hdr *)(values + (size_t)k * value_size);
			if (lengths[i] > value_size - sizeof(*h)) {
				err = -E2BIG;
				break;
			}
			keys[k] = (uint32_t)i;
			h->len = lengths[i];
			h->l3 = l3 ? l3[i] : 0;
			h->ipver = ipver ? ipver[i] : 0;
			h->pad = 0;
			memcpy(h + 1, blob + offsets[i], lengths[i]);
		}
		uint32_t count = k;
		LIBBPF_OPTS(bpf_map_batch_opts, o);
		if (!err && k && bpf_map_update_batch(map_fd, keys, values, &count, &o))
			err = -errno;
	}
	free(values);
	return err ? err : (long)n;
}

long nta_gen_index_fill(int map_fd, const uint32_t *frames, uint64_t n)
{
	uint32_t keys[FILL_BATCH];

	for (uint64_t i = 0; i < n; i += FILL_BATCH) {
		uint32_t count = n - i < FILL_BATCH ? (uint32_t)(n - i) : FILL_BATCH;
		for (uint32_t k = 0; k < count; k++)
			keys[k] = (uint32_t)(i + k);
		LIBBPF_OPTS(bpf_map_batch_opts, o);
		if (bpf_map_update_batch(map_fd, keys, frames + i, &count, &o))
			return -errno;
	}
	return (long)n;
}
