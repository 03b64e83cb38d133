/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * nta_permit.h - what a tcpdump filter translated into C (harness/permit.py) runs on: a frame, and its
 * packet loads as classic BPF makes them (1, 2 or 4 bytes, big-endian; a load past the frame's end
 * ends the filter with 0), bounds-checked as the verifier wants. A load in the frame's first buffer
 * reads it directly; one past it (a jumbo frame in fragments) goes through bpf_xdp_load_bytes.
 *
 * The translation is a header of its own, made for the run (nta_permit_gen.h, shown by --ebpf), which
 * defines nta_permit(const struct nta_pkt *): non-zero when the filter accepts the frame. A program
 * compiled with -DNTA_PERMIT includes both. User space (the translation's tests) defines
 * NTA_PERMIT_USER: ctx is then the whole frame, in one buffer, and the first buffer a part of it.
 */
#ifndef NTA_PERMIT_H
#define NTA_PERMIT_H

struct nta_pkt {
	const void *data, *end; /* the frame's first buffer */
	void *ctx;              /* struct xdp_md *, for what lies past it (user space: the whole frame) */
	__u32 len;              /* the whole frame's length (classic BPF's "len") */
	__u32 pad;
};

#define NTA_PKT_DIRECT 0x4000 /* offsets the direct path takes: the verifier bounds a variable one */

#ifdef NTA_PERMIT_USER
static inline int nta_pkt_rest(const struct nta_pkt *p, __u32 off, void *to, __u32 n)
{
	if (off > p->len || n > p->len - off)
		return -1;
	__builtin_memcpy(to, (const __u8 *)p->ctx + off, n);
	return 0;
}
#define NTA_PERMIT_INLINE static inline
#else
static __always_inline int nta_pkt_rest(const struct nta_pkt *p, __u32 off, void *to, __u32 n)
{
	return bpf_xdp_load_bytes(p->ctx, off, to, n);
}
#define NTA_PERMIT_INLINE static __always_inline
#endif

/* n (1, 2 or 4) bytes at off, big-endian, into *v: 0, or -1 past the frame's end. */
NTA_PERMIT_INLINE int nta_pkt_load(const struct nta_pkt *p, __u32 off, __u32 n, __u32 *v)
{
	__u8 b[4] = { 0, 0, 0, 0 };

	if (off < NTA_PKT_DIRECT) {
		const __u8 *q = (const __u8 *)p->data + (off & (NTA_PKT_DIRECT - 1));
		if ((const void *)(q + n) <= p->end) {
			if (n == 1) {
				*v = q[0];
			} else if (n == 2) {
				*v = (__u32)q[0] << 8 | q[1];
			} else {
				*v = (__u32)q[0] << 24 | (__u32)q[1] << 16 | (__u32)q[2] << 8 | q[3];
			}
			return 0;
		}
	}
	if (nta_pkt_rest(p, off, b, n))
		return -1;
	*v = n == 1 ? b[0] : n == 2 ? (__u32)b[0] << 8 | b[1] : (__u32)b[0] << 24 | (__u32)b[1] << 16 | (__u32)b[2] << 8 | b[3];
	return 0;
}

#endif /* NTA_PERMIT_H */
