// SPDX-License-Identifier: GPL-2.0-only
/*
 * ethtool.c - a device's driver statistics (what 'ethtool -S' prints), through SIOCETHTOOL on a socket of
 * the device's namespace: veth counts frames that XDP redirected into it and its peer could not take only
 * there (tx_queue_N_xdp_xmit_errors).
 */
#include <errno.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "traffic.h"

long nta_ethtool_stats(int sock, const char *ifname, char *names, uint64_t *values, size_t max)
{
	struct ifreq ifr;
	struct {
		struct ethtool_sset_info hdr;
		uint32_t count;
	} sset = { .hdr = { .cmd = ETHTOOL_GSSET_INFO, .sset_mask = 1ull << ETH_SS_STATS } };
	struct ethtool_gstrings *strings = NULL;
	struct ethtool_stats *stats = NULL;
	long n, err = 0;

	memset(&ifr, 0, sizeof(ifr));
	if (!ifname || strlen(ifname) >= sizeof(ifr.ifr_name))
		return -EINVAL;
	strcpy(ifr.ifr_name, ifname);
	ifr.ifr_data = (void *)&sset;
	if (ioctl(sock, SIOCETHTOOL, &ifr))
		return -errno;
	n = sset.hdr.sset_mask ? sset.count : 0;
	strings = calloc(1, sizeof(*strings) + (size_t)n * ETH_GSTRING_LEN);
	stats = calloc(1, sizeof(*stats) + (size_t)n * sizeof(uint64_t));
	if (!strings || !stats) {
		err = -ENOMEM;
		goto out;
	}
	strings->cmd = ETHTOOL_GSTRINGS;
	strings->string_set = ETH_SS_STATS;
	strings->len = (uint32_t)n;
	ifr.ifr_data = (void *)strings;
	if (ioctl(sock, SIOCETHTOOL, &ifr)) {
		err = -errno;
		goto out;
	}
	stats->cmd = ETHTOOL_GSTATS;
	stats->n_stats = (uint32_t)n;
	ifr.ifr_data = (void *)stats;
	if (ioctl(sock, SIOCETHTOOL, &ifr)) {
		err = -errno;
		goto out;
	}
	if ((size_t)n > max)
		n = (long)max;
	for (long i = 0; i < n; i++) {
		memcpy(names + i * ETH_GSTRING_LEN, strings->data + i * ETH_GSTRING_LEN, ETH_GSTRING_LEN);
		names[i * ETH_GSTRING_LEN + ETH_GSTRING_LEN - 1] = 0;
		values[i] = stats->data[i];
	}
out:
	free(strings);
	free(stats);
	return err ? err : n;
}
