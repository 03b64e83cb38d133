/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ctl_flows.h - the controller's flow table (ctl_flows.c), inside harness._ctl_c: per flow hash, the
 * bytes its held frames are charged and whether it is stuck. Not part of ctl.h's API.
 */
#ifndef NTA_CTL_FLOWS_H
#define NTA_CTL_FLOWS_H

#include "ctl.h"

struct nta_flow {
	uint32_t hash;
	uint8_t used, stuck;
	uint16_t pad;
	uint64_t bytes; /* charged for the frames it holds now */
};

struct nta_flows {
	struct nta_flow *t;
	uint32_t mask, n;
};

/* cap: a power of two. 0 or -ENOMEM. */
int nta_flows_init(struct nta_flows *f, uint32_t cap);
void nta_flows_free(struct nta_flows *f);
/* The flow of hash, made when it is new (NULL: no memory to grow the table). */
struct nta_flow *nta_flows_get(struct nta_flows *f, uint32_t hash);
/* The flow of hash, or NULL when there is none. */
struct nta_flow *nta_flows_find(const struct nta_flows *f, uint32_t hash);

#endif /* NTA_CTL_FLOWS_H */
