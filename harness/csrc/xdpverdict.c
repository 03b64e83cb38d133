// SPDX-License-Identifier: GPL-2.0-only
/*
 * xdpverdict.c - an XDP program's verdict on each frame of a capture: BPF_PROG_RUN once per frame
 * (not live: nothing is sent), its return value kept (see traffic.h).
 */
#include <bpf/bpf.h>
#include <errno.h>

#include "traffic.h"

long nta_xdp_verdicts(int prog_fd, const uint8_t *blob, const uint64_t *offsets, const uint32_t *lengths,
		      uint64_t n, uint32_t *verdicts)
{
	for (uint64_t i = 0; i < n; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = blob + offsets[i], .data_size_in = lengths[i], .repeat = 1);
		if (bpf_prog_test_run_opts(prog_fd, &o))
			return -errno;
		verdicts[i] = o.retval;
	}
	return (long)n;
}
