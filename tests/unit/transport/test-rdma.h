/* Shared by the RDMA unit tests: the protocol tests, the two-endpoint simulation, and the
 * connection tests against the in-process fake device (fake-verbs.c, fake-rdma-cm.c). */
#pragma once

#include <stdint.h>

uint64_t test_rand(uint64_t *state);

/* test-rdma-sim.c */
void test_sim_one_way(void **state);
void test_sim_ping_pong(void **state);
void test_sim_duplex(void **state);
void test_sim_overrun_detected(void **state);

/* test-rdma-conn.c */
void test_conn_transfer(void **state);
void test_conn_small_buffers_slow_reader(void **state);
void test_conn_ping_pong(void **state);
void test_conn_full_duplex(void **state);
void test_conn_timeouts(void **state);
void test_conn_shutdown_wakes(void **state);
void test_conn_peer_closes(void **state);
void test_conn_peer_dies(void **state);
void test_conn_corrupt_header(void **state);
void test_conn_setup_errors(void **state);
void test_available(void **state);

/* fake-verbs.c, fake-rdma-cm.c: test controls of the fake device. */
enum fake_devices {
	FAKE_DEVICES_NONE_LOADED, /* ibv_get_device_list fails with ENOSYS */
	FAKE_DEVICES_ZERO,	  /* returns an empty list */
	FAKE_DEVICES_PORT_DOWN,	  /* one device, its port down */
	FAKE_DEVICES_NO_ACCESS,	  /* one device that cannot be opened (EACCES) */
	FAKE_DEVICES_ONE,	  /* one device with an active port */
};
void fake_rdma_set_devices(enum fake_devices d);
/* Flips a bit of the next SEND's header that this many more SENDs from now carries. */
void fake_rdma_corrupt_send(unsigned after);
/* The peer's QP errors out (as when its host dies): both sides see flushes/error completions,
 * no DISCONNECTED event. */
void fake_rdma_kill_all(void);
/* SENDs that found no posted receive (a flow-control bug: must stay 0). */
unsigned fake_rdma_rnr_count(void);
/* Misuse a real library would punish (EBUSY destroys, unacked CQ events, CQ overruns). */
unsigned fake_rdma_violations(void);
/* Objects still alive (PDs, CQs, MRs, QPs, ids, channels): 0 after everything was freed. */
unsigned fake_rdma_live_objects(void);
