/* Peer addresses: parsing host[:port] forms and printing them back. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "transport/transport.h"

static int split_host_port(const char *s, char *host, size_t host_size, const char **ret_port)
{
	const char *colon;
	size_t n;

	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end == s + 1)
			return -EINVAL;
		n = (size_t)(end - s - 1);
		if (end[1] == ':')
			*ret_port = end + 2;
		else if (end[1])
			return -EINVAL;
		s++;
	} else if ((colon = strchr(s, ':')) && !strchr(colon + 1, ':')) {
		n = (size_t)(colon - s);
		*ret_port = colon + 1;
	} else {
		n = strlen(s); /* a bare IPv6 literal or a name without port */
	}
	if (n == 0 || n >= host_size)
		return -EINVAL;
	memcpy(host, s, n);
	host[n] = 0;
	return 0;
}

int transport_parse_address(const char *s, uint16_t default_port, struct sockaddr_storage *ret,
			    socklen_t *ret_len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV},
			*ai = NULL;
	const char *port_str = NULL;
	char host[256], port[8];
	uint32_t p = default_port;
	int r;

	if (!s || !*s)
		return -EINVAL;
	r = split_host_port(s, host, sizeof(host), &port_str);
	if (r < 0)
		return r;
	if (port_str && (parse_uint32(port_str, &p) < 0 || p == 0 || p > 65535))
		return -EINVAL;
	snprintf(port, sizeof(port), "%u", p);
	hints.ai_flags |= AI_NUMERICHOST;
	r = getaddrinfo(host, port, &hints, &ai);
	if (r == EAI_NONAME) {
		hints.ai_flags &= ~AI_NUMERICHOST;
		r = getaddrinfo(host, port, &hints, &ai);
	}
	if (r != 0)
		return r == EAI_MEMORY ? -ENOMEM : -EHOSTUNREACH;
	if (ai->ai_addrlen > sizeof(*ret)) {
		freeaddrinfo(ai);
		return -EINVAL;
	}
	memset(ret, 0, sizeof(*ret));
	memcpy(ret, ai->ai_addr, ai->ai_addrlen);
	*ret_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

char *transport_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, size, "<family %d>", sa->sa_family);
	}
	return buf;
}
