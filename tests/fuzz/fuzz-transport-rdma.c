/* libFuzzer target: the RDMA backend's wire decoders (connection info from rdma_cm private
 * data, and the header of every received message), fed what a hostile peer could send. */
#include <stdint.h>
#include <stdlib.h>

#include "transport/rdma-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct transport_rdma_info info;
	struct transport_rdma_msg msg;
	const char *reason = NULL;

	if (transport_rdma_info_decode(data, size, &info, &reason) >= 0) {
		if (info.n_buffers < TRANSPORT_RDMA_N_BUFFERS_MIN ||
		    info.n_buffers > TRANSPORT_RDMA_N_BUFFERS_MAX ||
		    info.buffer_size < TRANSPORT_RDMA_BUFFER_SIZE_MIN ||
		    info.buffer_size > TRANSPORT_RDMA_BUFFER_SIZE_MAX)
			abort(); /* accepted values out of bounds */
	} else if (!reason) {
		abort();
	}
	reason = NULL;
	if (transport_rdma_msg_decode(data, size, 1 << 20, &msg, &reason) >= 0) {
		if (msg.len + TRANSPORT_RDMA_MSG_HEADER_SIZE != size || msg.len > (1 << 20))
			abort();
	} else if (!reason) {
		abort();
	}
	return 0;
}
