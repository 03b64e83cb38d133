// SPDX-License-Identifier: GPL-2.0-only
/*
 * bpfload.c - load BCC's compiled XDP instructions frags-aware, with
 * libbpf's bpf_prog_load(). BCC compiles and relocates the maps; only the
 * load flag it cannot pass (BPF_F_XDP_HAS_FRAGS) is ours. On failure the
 * load is tried again with the verifier's log on, and its last lines are
 * handed back. Also the ring buffer maps a program's array of rings holds
 * beside the one BCC made.
 */
#include <bpf/bpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <stdlib.h>
#include <string.h>

#include "traffic.h"

#define VLOG_BYTES (1u << 20)

/* Keep the tail of the verifier's log: its last lines say why. */
static void log_tail(const char *buf, char *out, size_t len)
{
	size_t n = strlen(buf);

	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	size_t start = n > len - 1 ? n - (len - 1) : 0;
	memcpy(out, buf + start, n - start);
	out[n - start] = 0;
}

int nta_xdp_load_frags(const void *insns, size_t insn_bytes, const char *name, char *log, size_t log_len)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .prog_flags = BPF_F_XDP_HAS_FRAGS);
	int fd, err;

	if (!insns || !insn_bytes || insn_bytes % sizeof(struct bpf_insn))
		return -EINVAL;
	if (log && log_len)
		log[0] = 0;
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, name, "GPL", insns, insn_bytes / sizeof(struct bpf_insn), &opts);
	if (fd >= 0)
		return fd;
	err = errno;
	char *vlog = log && log_len > 1 ? calloc(1, VLOG_BYTES) : NULL;
	if (vlog) {
		opts.log_buf = vlog;
		opts.log_size = VLOG_BYTES;
		opts.log_level = 1;
		fd = bpf_prog_load(BPF_PROG_TYPE_XDP, name, "GPL", insns, insn_bytes / sizeof(struct bpf_insn),
				   &opts);
		if (fd < 0)
			log_tail(vlog, log, log_len);
		free(vlog);
		if (fd >= 0) /* it loaded the second time: keep it */
			return fd;
	}
	return -err;
}

int nta_ringbuf_map_create(const char *name, uint32_t bytes)
{
	int fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, name, 0, 0, bytes, NULL);

	return fd >= 0 ? fd : -errno;
}
