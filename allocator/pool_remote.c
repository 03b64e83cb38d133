// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pool_remote.c - puts from threads other than the pool's owner: queued,
 * and applied by the owner (when its alloc cache runs dry, and while destroy
 * waits), outside its fast context, so the pages they free go to the ring.
 */
#include <errno.h>
#include <stdlib.h>

#include "pool_internal.h"

NTA_API int nta_pool_put_remote(struct nta_pool *p, uint64_t off)
{
	int err = 0;

	pthread_mutex_lock(&p->remote_lock);
	if (p->nremote == p->remote_cap) {
		size_t cap = p->remote_cap ? p->remote_cap * 2 : 256;
		int64_t *nr = realloc(p->remote, cap * sizeof(*nr));
		if (!nr)
			err = -ENOMEM;
		else {
			p->remote = nr;
			p->remote_cap = cap;
		}
	}
	if (!err)
		p->remote[p->nremote++] = (int64_t)off;
	pthread_mutex_unlock(&p->remote_lock);
	return err;
}

NTA_API long nta_pool_drain_remote(struct nta_pool *p)
{
	int64_t *batch;
	size_t n;

	pthread_mutex_lock(&p->remote_lock);
	batch = p->remote;
	n = p->nremote;
	p->remote = NULL;
	p->nremote = p->remote_cap = 0;
	pthread_mutex_unlock(&p->remote_lock);
	for (size_t k = 0; k < n; k++)
		nta_pool_put(p, (uint64_t)batch[k], 0); /* not the fast context: the ring */
	free(batch);
	return (long)n;
}
