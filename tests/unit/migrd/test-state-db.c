/* Unit tests for the SQLite state store: round trip, epoch, reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"
#include "migrd/state-db.h"

static void test_roundtrip(void **state)
{
	char dir[] = "/tmp/migrd-test-db-XXXXXX", path[256];
	struct cluster_state s = {0}, t;
	struct state_db *db;
	struct stat st;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sub", dir);
	assert_int_equal(state_db_open(path, &db), 0);
	assert_int_equal(state_db_load(db, &t), 0);
	assert_int_equal(t.epoch, 0);
	assert_int_equal(t.n_hosts, 0);

	cluster_state_register_host(&s, 2, "b", NULL);
	cluster_state_register_host(&s, 1, "a", "10.1.1.1");
	s.hosts[1].maintenance = true;
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "a", NULL), 1);
	assert_int_equal(cluster_state_set_owner(&s, "vm1", "vm", "b", "a"), 1);
	assert_int_equal(cluster_state_set_owner(&s, "web", "container", "a", NULL), 1);
	s.epoch = 41;
	assert_int_equal(state_db_save(db, &s), 0);
	db = state_db_close(db);

	assert_int_equal(state_db_open(path, &db), 0);
	assert_int_equal(state_db_load(db, &t), 0);
	assert_int_equal(t.epoch, 41);
	assert_int_equal(t.n_hosts, 2);
	assert_string_equal(t.hosts[0].address, "10.1.1.1");
	assert_true(t.hosts[1].maintenance);
	assert_int_equal(t.n_workloads, 2);
	assert_string_equal(cluster_state_find_workload(&t, "vm1")->host, "b");
	assert_int_equal(cluster_state_find_workload(&t, "vm1")->moves, 1);
	assert_int_equal(cluster_state_hash(&s), cluster_state_hash(&t));
	cluster_state_done(&t);
	state_db_close(db);

	snprintf(path, sizeof(path), "%s/sub/state.db", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0077, 0);
	cluster_state_done(&s);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_corrupt_file(void **state)
{
	char dir[] = "/tmp/migrd-test-db-XXXXXX", path[256], cmd[300];
	struct state_db *db = NULL;
	struct cluster_state t;
	FILE *f;
	int r;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state.db", dir);
	f = fopen(path, "w");
	fputs("this is not a database, just text that is long enough to look like a header....", f);
	fclose(f);
	r = state_db_open(dir, &db);
	if (r >= 0)
		r = state_db_load(db, &t);
	assert_int_equal(r, -EBADMSG);
	state_db_close(db);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_corrupt_file),
	};
	log_set_max_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
