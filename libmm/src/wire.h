/*
 * Building and checking the client-socket messages of <mm/protocol.h>.
 * Validation is the single gate every received message passes: it checks the
 * header, the exact length for the type, counts and text fields, and returns
 * a negative errno naming what was wrong. Pure functions, thread-safe.
 */
#ifndef MM_WIRE_H
#define MM_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <mm/protocol.h>

/* Fill a header for a message of type and length bytes. */
void mm__msg_init(mm_msg_hdr_t *hdr, uint16_t type, uint32_t length, uint32_t seq);

/* Length of an install or install-reply message carrying count chunks. */
uint32_t mm__msg_install_length(uint32_t count);

/* Length of a balloon inflate/deflate carrying count frame numbers, and of
 * a free page report carrying count blocks. */
uint32_t mm__msg_balloon_length(uint32_t count);
uint32_t mm__msg_fpr_length(uint32_t count);

/*
 * Check a received message of len bytes. Returns its type (> 0) or:
 * -EBADMSG  shorter than a header, wrong magic, or a length field that does
 *           not match len;
 * -EPROTONOSUPPORT  another protocol version;
 * -EPROTO   unknown type, or a length wrong for the type;
 * -EINVAL   a field out of range (count, name, weight, flags, kind, node,
 *           a block address not 2 MiB aligned). Whether a frame or block
 *           lies inside the sender's region is the daemon's check.
 * buf must be suitably aligned for mm_msg_hdr_t.
 */
int mm__msg_check(const void *buf, size_t len);

/* Human-readable name of a message type, "unknown" otherwise. */
const char *mm__msg_type_name(uint16_t type);

#endif /* MM_WIRE_H */
