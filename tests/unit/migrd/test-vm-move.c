/* What a carried VM move needs of the local libvirt: migration over UNIX sockets (6.8). Older
 * ones are refused before anything starts, with the way out (--native). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "migrd/vms-internal.h"

static void test_libvirt_versions(void **state)
{
	char *msg = vms_carried_refusal("h1", "vm1", 6007000);

	assert_non_null(msg);
	assert_string_equal(msg, "libvirt 6.7 on h1 cannot migrate over UNIX sockets (6.8 or newer "
				 "can): move vm1 with --native");
	free(msg);
	msg = vms_carried_refusal("h1", "vm1", 5010000);
	assert_non_null(strstr(msg, "libvirt 5.10 on h1"));
	free(msg);
	assert_null(vms_carried_refusal("h1", "vm1", 6008000));
	assert_null(vms_carried_refusal("h1", "vm1", 9000000)); /* Debian 12 */
	assert_null(vms_carried_refusal("h1", "vm1", 0));	/* unknown: libvirt says */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_libvirt_versions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
