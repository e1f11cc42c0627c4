/* The RDMA backend's wire protocol without a device: header and connection-info packing,
 * credit accounting, slicing an iovec into messages and reassembling received ones. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "transport/rdma-internal.h"

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static uint16_t get_le16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static int fail(const char *reason, const char **ret_reason, int error)
{
	if (ret_reason)
		*ret_reason = reason;
	return error;
}

/* ---- connection info: magic u32, version u16, reserved u16, n_buffers u32, buffer_size u32 */

void transport_rdma_info_encode(const struct transport_rdma_info *info,
				uint8_t out[TRANSPORT_RDMA_INFO_SIZE])
{
	put_le32(out, TRANSPORT_RDMA_INFO_MAGIC);
	put_le16(out + 4, TRANSPORT_RDMA_INFO_VERSION);
	put_le16(out + 6, 0);
	put_le32(out + 8, info->n_buffers);
	put_le32(out + 12, info->buffer_size);
}

int transport_rdma_info_decode(const void *data, size_t len, struct transport_rdma_info *ret,
			       const char **ret_reason)
{
	const uint8_t *p = data;
	struct transport_rdma_info info;

	if (!p || len < TRANSPORT_RDMA_INFO_SIZE)
		return fail("connection info too short", ret_reason, -EPROTO);
	if (get_le32(p) != TRANSPORT_RDMA_INFO_MAGIC)
		return fail("not a migrd RDMA peer (bad magic)", ret_reason, -EPROTO);
	if (get_le16(p + 4) != TRANSPORT_RDMA_INFO_VERSION)
		return fail("unsupported RDMA protocol version", ret_reason, -EPROTO);
	if (get_le16(p + 6) != 0)
		return fail("reserved connection info bits set", ret_reason, -EPROTO);
	info.n_buffers = get_le32(p + 8);
	info.buffer_size = get_le32(p + 12);
	if (info.n_buffers < TRANSPORT_RDMA_N_BUFFERS_MIN ||
	    info.n_buffers > TRANSPORT_RDMA_N_BUFFERS_MAX)
		return fail("peer buffer count out of range", ret_reason, -EPROTO);
	if (info.buffer_size < TRANSPORT_RDMA_BUFFER_SIZE_MIN ||
	    info.buffer_size > TRANSPORT_RDMA_BUFFER_SIZE_MAX)
		return fail("peer buffer size out of range", ret_reason, -EPROTO);
	*ret = info;
	return 0;
}

/* ---- message header: magic u32, type u8, reserved u8, acks u16, credits u32, len u32 ---- */

void transport_rdma_msg_encode(const struct transport_rdma_msg *m,
			       uint8_t out[TRANSPORT_RDMA_MSG_HEADER_SIZE])
{
	put_le32(out, TRANSPORT_RDMA_MSG_MAGIC);
	out[4] = m->type;
	out[5] = 0;
	put_le16(out + 6, m->acks);
	put_le32(out + 8, m->credits);
	put_le32(out + 12, m->len);
}

int transport_rdma_msg_decode(const void *data, size_t byte_len, size_t max_payload,
			      struct transport_rdma_msg *ret, const char **ret_reason)
{
	const uint8_t *p = data;
	struct transport_rdma_msg m;

	if (!p || byte_len < TRANSPORT_RDMA_MSG_HEADER_SIZE)
		return fail("message shorter than its header", ret_reason, -EBADMSG);
	if (get_le32(p) != TRANSPORT_RDMA_MSG_MAGIC)
		return fail("bad message magic", ret_reason, -EBADMSG);
	if (p[5] != 0)
		return fail("reserved message bits set", ret_reason, -EBADMSG);
	m = (struct transport_rdma_msg){
		.type = p[4],
		.acks = get_le16(p + 6),
		.credits = get_le32(p + 8),
		.len = get_le32(p + 12),
	};
	if ((size_t)m.len != byte_len - TRANSPORT_RDMA_MSG_HEADER_SIZE)
		return fail("message length does not match what arrived", ret_reason, -EBADMSG);
	switch (m.type) {
	case TRANSPORT_RDMA_MSG_DATA:
		if (m.len == 0)
			return fail("empty data message", ret_reason, -EBADMSG);
		if (m.len > max_payload)
			return fail("data message larger than a buffer", ret_reason, -EBADMSG);
		break;
	case TRANSPORT_RDMA_MSG_CREDIT:
		if (m.len != 0)
			return fail("credit message with payload", ret_reason, -EBADMSG);
		if (m.credits == 0)
			return fail("credit message without credits", ret_reason, -EBADMSG);
		break;
	default:
		return fail("unknown message type", ret_reason, -EBADMSG);
	}
	*ret = m;
	return 0;
}

/* ---- credits ------------------------------------------------------------------------------ */

void transport_rdma_credits_init(struct transport_rdma_credits *cr, uint32_t own_slots,
				 uint32_t peer_slots)
{
	*cr = (struct transport_rdma_credits){
		.own_slots = own_slots,
		.peer_slots = peer_slots,
		.send_avail = peer_slots,
		.ctrl_avail = TRANSPORT_RDMA_CTRL_SLOTS,
		.recv_allowed = own_slots,
		.ctrl_recv_allowed = TRANSPORT_RDMA_CTRL_SLOTS,
		/* A quarter of the slots: the sender still has most of its window when it hears. */
		.threshold = MAX(own_slots / 4, 1U),
	};
}

bool transport_rdma_credits_can_send_data(const struct transport_rdma_credits *cr)
{
	return cr->send_avail > 0;
}

bool transport_rdma_credits_want_update(const struct transport_rdma_credits *cr, bool about_to_wait)
{
	if (cr->owed == 0 || cr->ctrl_avail == 0)
		return false;
	return about_to_wait || cr->owed >= cr->threshold;
}

int transport_rdma_credits_take(struct transport_rdma_credits *cr, uint8_t type,
				struct transport_rdma_msg *m)
{
	switch (type) {
	case TRANSPORT_RDMA_MSG_DATA:
		if (cr->send_avail == 0)
			return -EAGAIN;
		cr->send_avail--;
		break;
	case TRANSPORT_RDMA_MSG_CREDIT:
		/* Never an empty one: that is what keeps two sides from ping-ponging. */
		if (cr->ctrl_avail == 0 || cr->owed == 0)
			return -EAGAIN;
		cr->ctrl_avail--;
		break;
	default:
		return -EINVAL;
	}
	m->type = type;
	m->credits = cr->owed;
	m->acks = (uint16_t)cr->acks_owed;
	cr->recv_allowed += cr->owed;
	cr->ctrl_recv_allowed += cr->acks_owed;
	cr->owed = 0;
	cr->acks_owed = 0;
	return 0;
}

int transport_rdma_credits_receive(struct transport_rdma_credits *cr,
				   const struct transport_rdma_msg *m)
{
	/* All checks first: a refused message changes nothing. */
	if (m->type == TRANSPORT_RDMA_MSG_DATA) {
		if (cr->recv_allowed == 0)
			return -EPROTO;
	} else if (m->type == TRANSPORT_RDMA_MSG_CREDIT) {
		if (cr->ctrl_recv_allowed == 0)
			return -EPROTO;
	} else
		return -EPROTO;
	if (m->credits > cr->peer_slots - cr->send_avail)
		return -EPROTO;
	if (m->acks > TRANSPORT_RDMA_CTRL_SLOTS - cr->ctrl_avail)
		return -EPROTO;

	if (m->type == TRANSPORT_RDMA_MSG_DATA)
		cr->recv_allowed--;
	else {
		cr->ctrl_recv_allowed--;
		cr->acks_owed++;
	}
	cr->send_avail += m->credits;
	cr->ctrl_avail += m->acks;
	return 0;
}

void transport_rdma_credits_reposted(struct transport_rdma_credits *cr)
{
	cr->owed++;
}

enum transport_rdma_step transport_rdma_next_step(const struct transport_rdma_credits *cr,
						  bool have_data, bool data_buffer_free,
						  bool ctrl_buffer_free)
{
	if (have_data && transport_rdma_credits_can_send_data(cr) && data_buffer_free)
		return TRANSPORT_RDMA_STEP_SEND_DATA;
	if (ctrl_buffer_free && transport_rdma_credits_want_update(cr, true))
		return TRANSPORT_RDMA_STEP_SEND_CREDIT;
	return TRANSPORT_RDMA_STEP_WAIT;
}

/* ---- slicing ------------------------------------------------------------------------------ */

int transport_rdma_iov_cursor_init(struct transport_rdma_iov_cursor *cur, const struct iovec *iov,
				   int n_iov)
{
	size_t total = 0;

	if (n_iov < 0 || (n_iov > 0 && !iov))
		return -EINVAL;
	for (int i = 0; i < n_iov; i++) {
		if (iov[i].iov_len > 0 && !iov[i].iov_base)
			return -EINVAL;
		if (__builtin_add_overflow(total, iov[i].iov_len, &total))
			return -EINVAL;
	}
	*cur = (struct transport_rdma_iov_cursor){
		.iov = iov,
		.n_iov = (size_t)n_iov,
		.remaining = total,
	};
	return 0;
}

size_t transport_rdma_iov_cursor_copy(struct transport_rdma_iov_cursor *cur, void *dst, size_t max)
{
	uint8_t *out = dst;
	size_t copied = 0;

	while (copied < max && cur->index < cur->n_iov) {
		const struct iovec *v = &cur->iov[cur->index];
		size_t k = MIN(v->iov_len - cur->offset, max - copied);

		if (k > 0)
			memcpy(out + copied, (const uint8_t *)v->iov_base + cur->offset, k);
		copied += k;
		cur->offset += k;
		if (cur->offset == v->iov_len) {
			cur->index++;
			cur->offset = 0;
		}
	}
	cur->remaining -= copied;
	return copied;
}

size_t transport_rdma_msg_count(size_t total, size_t max_payload)
{
	if (max_payload == 0)
		return 0;
	return total / max_payload + (total % max_payload != 0);
}

/* ---- reassembly --------------------------------------------------------------------------- */

int transport_rdma_rx_queue_init(struct transport_rdma_rx_queue *q, uint32_t capacity)
{
	struct transport_rdma_rx_entry *e;

	if (capacity == 0)
		return -EINVAL;
	e = calloc(capacity, sizeof(*e));
	if (!e)
		return -ENOMEM;
	*q = (struct transport_rdma_rx_queue){.entries = e, .capacity = capacity};
	return 0;
}

void transport_rdma_rx_queue_done(struct transport_rdma_rx_queue *q)
{
	free(q->entries);
	*q = (struct transport_rdma_rx_queue){};
}

int transport_rdma_rx_queue_push(struct transport_rdma_rx_queue *q, uint32_t slot, uint32_t offset,
				 uint32_t len)
{
	if (q->n == q->capacity)
		return -ENOBUFS;
	q->entries[(q->head + q->n) % q->capacity] = (struct transport_rdma_rx_entry){
		.slot = slot,
		.offset = offset,
		.len = len,
	};
	q->n++;
	q->bytes += len;
	return 0;
}

int transport_rdma_rx_queue_read(struct transport_rdma_rx_queue *q, const uint8_t *pool,
				 size_t slot_size, void *dst, size_t want,
				 transport_rdma_release_t release, void *userdata,
				 size_t *ret_copied)
{
	uint8_t *out = dst;
	size_t copied = 0;
	int r = 0;

	while (copied < want && q->n > 0) {
		struct transport_rdma_rx_entry *e = &q->entries[q->head];
		size_t k = MIN((size_t)e->len, want - copied);

		memcpy(out + copied, pool + (size_t)e->slot * slot_size + e->offset, k);
		copied += k;
		e->offset += (uint32_t)k;
		e->len -= (uint32_t)k;
		q->bytes -= k;
		if (e->len > 0)
			break;
		/* Drained: out of the queue before release, which may repost the slot at once. */
		uint32_t slot = e->slot;
		q->head = (q->head + 1) % q->capacity;
		q->n--;
		if (release) {
			r = release(userdata, slot);
			if (r < 0)
				break;
		}
	}
	*ret_copied = copied;
	return r;
}
