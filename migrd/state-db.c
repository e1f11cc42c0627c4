/* SQLite store: the cluster state (a meta table with schema and epoch, hosts, owners of
 * workloads) and this host's own records (containers, VMs). */
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/common.h"
#include "migrd/state-db.h"

#define STATE_DB_SCHEMA 1

struct state_db {
	sqlite3 *db;
	char *path;
};

/* SQLite's result codes are not errnos; keep the message in the log, hand up -EIO. */
static int db_error(struct state_db *s, int rc, const char *what)
{
	log_debug("%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
	switch (rc & 0xff) {
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_CANTOPEN:
		return -EACCES;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	default:
		return -EIO;
	}
}

static int exec(struct state_db *s, const char *sql)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : db_error(s, rc, sql);
}

struct state_db *state_db_close(struct state_db *s)
{
	if (!s)
		return NULL;
	sqlite3_close(s->db);
	free(s->path);
	free(s);
	return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct state_db *, state_db_close);

int state_db_open(const char *state_dir, struct state_db **ret)
{
	_cleanup_(state_db_closep) struct state_db *s = NULL;
	int rc, r;

	r = mkdir_p(state_dir, 0700);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s || asprintf(&s->path, "%s/state.db", state_dir) < 0)
		return -ENOMEM;
	/* The database holds nothing secret yet, but later workload specs may: keep it private. */
	mode_t old = umask(0077);
	rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	umask(old);
	if (rc != SQLITE_OK)
		return s->db ? db_error(s, rc, "open") : -ENOMEM;
	sqlite3_busy_timeout(s->db, 2000);
	r = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;");
	if (r < 0)
		return r;
	r = exec(
		s,
		"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
		"CREATE TABLE IF NOT EXISTS containers (name TEXT PRIMARY KEY, record TEXT NOT "
		"NULL);"
		"CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY, record TEXT NOT NULL);"
		"CREATE TABLE IF NOT EXISTS hosts (nodeid INTEGER PRIMARY KEY,"
		" name TEXT NOT NULL UNIQUE, address TEXT, maintenance INTEGER NOT NULL DEFAULT 0);"
		"CREATE TABLE IF NOT EXISTS owners (name TEXT PRIMARY KEY, kind TEXT NOT NULL,"
		" host TEXT NOT NULL, moves INTEGER NOT NULL DEFAULT 0);"
		"INSERT OR IGNORE INTO meta VALUES ('schema', '" STRINGIFY(
			STATE_DB_SCHEMA) "');"
					 "INSERT OR IGNORE INTO meta VALUES ('epoch', '0');");
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

static int load_owners(struct state_db *s, struct cluster_state *st)
{
	sqlite3_stmt *stmt = NULL;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(s->db, "SELECT name, kind, host, moves FROM owners ORDER BY name",
				-1, &stmt, NULL);
	if (rc != SQLITE_OK)
		return db_error(s, rc, "prepare");
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(stmt, 0);
		const char *kind = (const char *)sqlite3_column_text(stmt, 1);
		const char *host = (const char *)sqlite3_column_text(stmt, 2);

		r = name && kind && host ? cluster_state_set_owner(st, name, kind, host, NULL)
					 : -EBADMSG;
		if (r < 0)
			break;
		((struct cluster_workload *)cluster_state_find_workload(st, name))->moves =
			(uint64_t)sqlite3_column_int64(stmt, 3);
	}
	sqlite3_finalize(stmt);
	if (r >= 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = db_error(s, rc, "step");
	return r < 0 ? r : 0;
}

int state_db_load(struct state_db *s, struct cluster_state *ret)
{
	struct cluster_state st = {0};
	sqlite3_stmt *stmt = NULL;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'epoch'", -1, &stmt,
				NULL);
	if (rc != SQLITE_OK)
		return db_error(s, rc, "prepare");
	if (sqlite3_step(stmt) == SQLITE_ROW)
		st.epoch = (uint64_t)sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);

	rc = sqlite3_prepare_v2(
		s->db, "SELECT nodeid, name, address, maintenance FROM hosts ORDER BY nodeid", -1,
		&stmt, NULL);
	if (rc != SQLITE_OK)
		return db_error(s, rc, "prepare");
	uint64_t epoch = st.epoch;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(stmt, 1);
		const char *address = (const char *)sqlite3_column_text(stmt, 2);
		sqlite3_int64 nodeid = sqlite3_column_int64(stmt, 0);

		if (!name || nodeid <= 0 || nodeid > UINT32_MAX) {
			r = -EBADMSG;
			break;
		}
		r = cluster_state_register_host(&st, (uint32_t)nodeid, name, address);
		if (r < 0)
			break;
		st.hosts[st.n_hosts - 1].maintenance = sqlite3_column_int(stmt, 3) != 0;
	}
	sqlite3_finalize(stmt);
	if (r >= 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = db_error(s, rc, "step");
	if (r >= 0)
		r = load_owners(s, &st);
	if (r < 0) {
		cluster_state_done(&st);
		return r;
	}
	/* Registering bumped the epoch per row; the stored epoch is the truth. */
	st.epoch = epoch;
	*ret = st;
	return 0;
}

int state_db_save(struct state_db *s, const struct cluster_state *st)
{
	sqlite3_stmt *stmt = NULL;
	char epoch[96];
	int rc, r;

	r = exec(s, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	r = exec(s, "DELETE FROM hosts");
	if (r < 0)
		goto rollback;
	rc = sqlite3_prepare_v2(s->db, "INSERT INTO hosts VALUES (?, ?, ?, ?)", -1, &stmt, NULL);
	if (rc != SQLITE_OK) {
		r = db_error(s, rc, "prepare");
		goto rollback;
	}
	for (size_t i = 0; i < st->n_hosts; i++) {
		const struct cluster_host *h = &st->hosts[i];

		sqlite3_reset(stmt);
		sqlite3_bind_int64(stmt, 1, h->nodeid);
		sqlite3_bind_text(stmt, 2, h->name, -1, SQLITE_STATIC);
		if (h->address)
			sqlite3_bind_text(stmt, 3, h->address, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(stmt, 3);
		sqlite3_bind_int(stmt, 4, h->maintenance);
		rc = sqlite3_step(stmt);
		if (rc != SQLITE_DONE) {
			r = db_error(s, rc, "insert host");
			sqlite3_finalize(stmt);
			goto rollback;
		}
	}
	sqlite3_finalize(stmt);
	r = exec(s, "DELETE FROM owners");
	if (r < 0)
		goto rollback;
	rc = sqlite3_prepare_v2(s->db, "INSERT INTO owners VALUES (?, ?, ?, ?)", -1, &stmt, NULL);
	if (rc != SQLITE_OK) {
		r = db_error(s, rc, "prepare");
		goto rollback;
	}
	for (size_t i = 0; i < st->n_workloads; i++) {
		const struct cluster_workload *w = &st->workloads[i];

		sqlite3_reset(stmt);
		sqlite3_bind_text(stmt, 1, w->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 2, w->kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 3, w->host, -1, SQLITE_STATIC);
		sqlite3_bind_int64(stmt, 4, (sqlite3_int64)w->moves);
		rc = sqlite3_step(stmt);
		if (rc != SQLITE_DONE) {
			r = db_error(s, rc, "insert owner");
			sqlite3_finalize(stmt);
			goto rollback;
		}
	}
	sqlite3_finalize(stmt);
	snprintf(epoch, sizeof(epoch), "UPDATE meta SET value = '%" PRIu64 "' WHERE key = 'epoch'",
		 st->epoch);
	r = exec(s, epoch);
	if (r < 0)
		goto rollback;
	return exec(s, "COMMIT");
rollback:
	(void)exec(s, "ROLLBACK");
	return r;
}

/* table is one of ours ("containers", "vms"), never input. */
static int record_put(struct state_db *s, const char *table, const char *name, json_t *record)
{
	_cleanup_free_ char *text = json_dumps(record, JSON_COMPACT | JSON_SORT_KEYS);
	sqlite3_stmt *stmt = NULL;
	int rc;

	if (!text)
		return -ENOMEM;
	char sql[96];

	snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO %s VALUES (?, ?)", table);
	rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		return db_error(s, rc, "prepare");
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, text, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : db_error(s, rc, "insert record");
}

static int record_delete(struct state_db *s, const char *table, const char *name)
{
	char sql[96];

	sqlite3_stmt *stmt = NULL;
	int rc;

	snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE name = ?", table);
	rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		return db_error(s, rc, "prepare");
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_DONE ? 0 : db_error(s, rc, "delete record");
}

static int records_load(struct state_db *s, const char *table, json_t **ret)
{
	char sql[96];

	json_t *all = json_array();
	sqlite3_stmt *stmt = NULL;
	int rc;

	if (!all)
		return -ENOMEM;
	snprintf(sql, sizeof(sql), "SELECT name, record FROM %s ORDER BY name", table);
	rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
	if (rc != SQLITE_OK) {
		json_decref(all);
		return db_error(s, rc, "prepare");
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(stmt, 0);
		const char *text = (const char *)sqlite3_column_text(stmt, 1);
		json_t *j = text ? json_loads(text, 0, NULL) : NULL;

		if (!json_is_object(j)) {
			log_warning("%s: skipping the malformed record %s in %s", s->path,
				    strna(name), table);
			json_decref(j);
			continue;
		}
		json_array_append_new(all, j);
	}
	sqlite3_finalize(stmt);
	*ret = all;
	return 0;
}

int state_db_container_put(struct state_db *s, const char *name, json_t *record)
{
	return record_put(s, "containers", name, record);
}

int state_db_container_delete(struct state_db *s, const char *name)
{
	return record_delete(s, "containers", name);
}

int state_db_containers_load(struct state_db *s, json_t **ret)
{
	return records_load(s, "containers", ret);
}

int state_db_vm_put(struct state_db *s, const char *name, json_t *record)
{
	return record_put(s, "vms", name, record);
}

int state_db_vm_delete(struct state_db *s, const char *name)
{
	return record_delete(s, "vms", name);
}

int state_db_vms_load(struct state_db *s, json_t **ret)
{
	return records_load(s, "vms", ret);
}
