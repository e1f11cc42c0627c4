/* Shared by the libvirt-facing files of checkpoint/vm: connections and error messages. */
#pragma once

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/* Opens uri (libvirt initialised once, its stderr printing off). NULL and *ret_error (malloc'd,
 * with libvirt's message) on failure. */
virConnectPtr vm_connect(const char *uri, char **ret_error);
/* "what: <libvirt's last error message>" (malloc'd, NULL when out of memory). */
char *vm_last_error(const char *what);
