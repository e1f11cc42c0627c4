/* What a domain needs from a host, read from its XML: the destination of a move checks these
 * paths before the migration starts, so a host that cannot run the VM refuses while the VM is
 * still running untouched on the source. */
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/vm/vm-internal.h"
#include "common/common.h"

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init(void)
{
	xmlInitParser();
}

static xmlDocPtr parse(const char *xml)
{
	pthread_once(&xml_once, xml_init);
	/* No network, no entities, no DTD loading: the XML comes from a peer. */
	return xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
			     XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

struct need {
	const char *xpath;
	const char *what;
	bool block; /* a block device rather than a file */
};

static const struct need needs[] = {
	{"/domain/devices/emulator/text()", "emulator"},
	{"/domain/os/kernel/text()", "kernel"},
	{"/domain/os/initrd/text()", "initrd"},
	{"/domain/os/loader/text()", "firmware"},
	{"/domain/devices/disk[@type='file']/source/@file", "disk"},
	{"/domain/devices/disk[@type='block']/source/@dev", "disk", true},
};

int vm_xml_check_host(const char *xml, char **ret_error)
{
	xmlDocPtr doc;
	xmlXPathContextPtr ctx;
	xmlNodePtr root;
	int r = 0;

	*ret_error = NULL;
	doc = parse(xml);
	root = doc ? xmlDocGetRootElement(doc) : NULL;
	if (!root || !xmlStrEqual(root->name, BAD_CAST "domain")) {
		if (doc)
			xmlFreeDoc(doc);
		*ret_error = strdup("the domain XML does not parse as a <domain>");
		return -EINVAL;
	}
	ctx = xmlXPathNewContext(doc);
	if (!ctx) {
		xmlFreeDoc(doc);
		return -ENOMEM;
	}
	for (size_t i = 0; i < ELEMENTSOF(needs) && r == 0; i++) {
		xmlXPathObjectPtr o = xmlXPathEvalExpression(BAD_CAST needs[i].xpath, ctx);

		for (int k = 0; o && o->nodesetval && k < o->nodesetval->nodeNr && r == 0; k++) {
			xmlChar *v = xmlNodeGetContent(o->nodesetval->nodeTab[k]);
			const char *path = (const char *)v;
			struct stat st;

			if (!path || !*path) {
				xmlFree(v);
				continue;
			}
			if (stat(path, &st) < 0) {
				r = -ENOENT;
				if (asprintf(ret_error, "%s %s: %s", needs[i].what, path,
					     strerror(errno)) < 0)
					*ret_error = NULL;
			} else if (needs[i].block ? !S_ISBLK(st.st_mode) : S_ISDIR(st.st_mode)) {
				r = -ENOENT;
				if (asprintf(ret_error, "%s %s: not a %s", needs[i].what, path,
					     needs[i].block ? "block device" : "file") < 0)
					*ret_error = NULL;
			} else if (access(path, R_OK) < 0) {
				r = -ENOENT;
				if (asprintf(ret_error, "%s %s: %s", needs[i].what, path,
					     strerror(errno)) < 0)
					*ret_error = NULL;
			}
			xmlFree(v);
		}
		xmlXPathFreeObject(o);
	}
	xmlXPathFreeContext(ctx);
	xmlFreeDoc(doc);
	return r;
}

char *vm_xml_name(const char *xml)
{
	xmlDocPtr doc = parse(xml);
	xmlXPathContextPtr ctx = doc ? xmlXPathNewContext(doc) : NULL;
	xmlXPathObjectPtr o =
		ctx ? xmlXPathEvalExpression(BAD_CAST "/domain/name/text()", ctx) : NULL;
	char *name = NULL;

	if (o && o->nodesetval && o->nodesetval->nodeNr == 1) {
		xmlChar *v = xmlNodeGetContent(o->nodesetval->nodeTab[0]);
		name = v ? strdup((const char *)v) : NULL;
		xmlFree(v);
	}
	xmlXPathFreeObject(o);
	xmlXPathFreeContext(ctx);
	if (doc)
		xmlFreeDoc(doc);
	return name;
}
