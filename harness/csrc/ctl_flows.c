// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ctl_flows.c - the controller's flows (ctl_flows.h): which frames belong together, by the flow hash
 * the metadata program puts in each record (nta_flow_hash computes the same from a frame), and per
 * flow the bytes its held frames are charged (its receive buffer, against --flow-limit) and whether it
 * is stuck (never read until the run ends). An open-addressing table, linear probing, grown as flows
 * come; nothing is removed during a run.
 */
#include <errno.h>
#include <linux/if_ether.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_flows.h"

int nta_flows_init(struct nta_flows *f, uint32_t cap)
{
	f->mask = cap - 1;
	f->n = 0;
	f->t = calloc(cap, sizeof(*f->t));
	return f->t ? 0 : -ENOMEM;
}

void nta_flows_free(struct nta_flows *f)
{
	free(f->t);
	f->t = NULL;
}

static struct nta_flow *slot(struct nta_flow *t, uint32_t mask, uint32_t hash)
{
	uint32_t i = (hash * 0x9e3779b1u) & mask;

	while (t[i].used && t[i].hash != hash)
		i = (i + 1) & mask;
	return &t[i];
}

/* Twice the room, every flow where it goes now. */
static int grow(struct nta_flows *f)
{
	uint32_t cap = (f->mask + 1) * 2;
	struct nta_flow *t = calloc(cap, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (uint32_t i = 0; i <= f->mask; i++)
		if (f->t[i].used)
			*slot(t, cap - 1, f->t[i].hash) = f->t[i];
	free(f->t);
	f->t = t;
	f->mask = cap - 1;
	return 0;
}

struct nta_flow *nta_flows_get(struct nta_flows *f, uint32_t hash)
{
	struct nta_flow *e = slot(f->t, f->mask, hash);

	if (e->used)
		return e;
	if ((f->n + 1) * 4 > (f->mask + 1) * 3) { /* three quarters full: grow first */
		if (grow(f))
			return NULL;
		e = slot(f->t, f->mask, hash);
	}
	*e = (struct nta_flow){ .hash = hash, .used = 1 };
	f->n++;
	return e;
}

struct nta_flow *nta_flows_find(const struct nta_flows *f, uint32_t hash)
{
	struct nta_flow *e = slot(f->t, f->mask, hash);

	return e->used ? e : NULL;
}

static inline uint32_t load32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

uint32_t nta_flow_hash(const uint8_t *f, uint32_t len)
{
	uint32_t off = 12, h = 0x9747b28c, l4 = 0, l4off = 0;
	uint16_t proto;

	if (len < 14)
		return 0;
	proto = (uint16_t)(f[12] << 8 | f[13]);
	for (int tags = 0; tags < 2 && (proto == ETH_P_8021Q || proto == ETH_P_8021AD) && off + 6 <= len; tags++) {
		off += 4;
		proto = (uint16_t)(f[off] << 8 | f[off + 1]);
	}
	off += 2;
	if (proto == ETH_P_IP && off + 20 <= len) {
		h = nta_mix(nta_mix(h, load32(f + off + 12)), load32(f + off + 16));
		l4 = f[off + 9];
		if (!((f[off + 6] << 8 | f[off + 7]) & 0x1fff) && (f[off] & 0xf) >= 5)
			l4off = off + (uint32_t)(f[off] & 0xf) * 4;
	} else if (proto == ETH_P_IPV6 && off + 40 <= len) {
		for (int i = 0; i < 4; i++)
			h = nta_mix(nta_mix(h, load32(f + off + 8 + 4 * i)), load32(f + off + 24 + 4 * i));
		l4 = f[off + 6];
		l4off = off + 40;
	}
	if (l4off && (l4 == 6 || l4 == 17) && l4off + 4 <= len) /* the ports as the program reads them */
		h = nta_mix(h, (uint32_t)(f[l4off] | f[l4off + 1] << 8) << 16 | (uint32_t)(f[l4off + 2] | f[l4off + 3] << 8));
	return nta_mix(h, l4);
}
