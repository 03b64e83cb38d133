/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nta_xdp_permit.c - the --permit filter alone: XDP_PASS for a frame it accepts, XDP_DROP for one it does
 * not. Run by BPF_PROG_RUN on each frame of a capture, never attached: what the kernel makes of the
 * translated filter (harness/permit.py), which the tests hold to libpcap's verdict frame by frame, and
 * 'nta inspect --permit' counts. Compiled by BCC with -DNTA_PERMIT and the translation (nta_permit_gen.h)
 * on -I.
 */
#include <uapi/linux/bpf.h>
#include "nta_permit.h"
#include "nta_permit_gen.h"

int nta_xdp_permit(struct xdp_md *ctx)
{
	struct nta_pkt pkt = { .data = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end, .ctx = ctx,
			       .len = bpf_xdp_get_buff_len(ctx) };

	return nta_permit(&pkt) ? XDP_PASS : XDP_DROP;
}
