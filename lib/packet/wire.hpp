// The packet layer's wire codec: cs.packetstream's BSUInt integers and packets (docs/packets.md,
// "Wire format"). Pure functions on bytes, with no state of their own: thread-safe.
//
// The codec never splits a stream: the message layer's varint_be128 length framer does
// (Framer::length_prefixed(0, LengthEncoding::varint_be128)), and decode_body() reads the bodies
// it delivers. Received bytes that break the format are errc::framing_error; a packet that cannot
// be written is errc::invalid_config.
#pragma once

#include <pipeworks/error.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace pipeworks::packet_wire {

// ---- BSUInt: big-endian base-128, bit 0x80 set on every byte but the last ----

// The most bytes a BSUInt may take: ten 7-bit groups hold 64 bits.
inline constexpr std::size_t kMaxBSUIntBytes = 10;

// The bytes append_bsuint() writes for `value`: 1 to 10.
constexpr std::size_t bsuint_size(std::uint64_t value) noexcept {
    std::size_t n = 1;
    while (value >>= 7) ++n;
    return n;
}

// Appends the shortest BSUInt of `value` to `out`.
void append_bsuint(std::uint64_t value, std::string& out);

struct BSUInt {
    std::uint64_t value = 0;
    std::size_t size = 0;  // bytes it took, redundant leading 0x80 bytes included
};

// Reads the BSUInt at the front of `in`. Redundant leading 0x80 bytes are accepted (`80 03` is
// 3, of size 2). Errors (errc::framing_error), each named in the message: `in` ends inside it,
// it is longer than 10 bytes, or its value does not fit in 64 bits.
Result<BSUInt> read_bsuint(std::string_view in);

// ---- Packets ----

// Packet := BSUInt(L) Body;  Body := BSUInt(tag) BSUInt(F) [BSUInt(channel)] [BSUInt(rq_type)]
// payload. F packs has_channel, is_request and the flags, so the flags have fewer than 64 bits.
inline constexpr std::uint64_t kMaxRequestFlags = std::numeric_limits<std::uint64_t>::max() >> 2;
inline constexpr std::uint64_t kMaxResponseFlags = std::numeric_limits<std::uint64_t>::max() >> 3;

// One packet, request or response. `payload` views bytes owned elsewhere: the body it was
// decoded from, or what the caller encodes.
struct Packet {
    std::uint64_t tag = 0;      // the request's number on its channel; a response carries it back
    std::uint64_t channel = 0;  // 0 is the default channel (not sent: F bit 0 clear)
    bool is_request = false;
    std::uint64_t rq_type = 0;  // requests: the wire rq_type, the API's + 1 (0: EOF or ERQ only)
    std::uint64_t flags = 0;    // the request flags, or the response flags
    bool ok = false;            // responses: the handler succeeded
    std::string_view payload;

    bool operator==(const Packet&) const = default;
};

// The two special packets: requests on channel 0 with flags 0, wire rq_type 0, no payload.
// EOF is the sender's last packet; after ERQ it sends no more requests (responses may follow).
inline constexpr Packet kEof{0, 0, true, 0, 0, false, {}};
inline constexpr Packet kErq{1, 0, true, 0, 0, false, {}};
// Their full encoding, length prefix included.
inline constexpr std::string_view kEofBytes{"\x03\x00\x02\x00", 4};
inline constexpr std::string_view kErqBytes{"\x03\x01\x02\x00", 4};

// True when `p` is EOF (or ERQ) field for field; how the bytes spelt it does not matter.
constexpr bool is_eof(const Packet& p) noexcept {
    return p == kEof;
}
constexpr bool is_erq(const Packet& p) noexcept {
    return p == kErq;
}

// The length of the body encode() writes for `p` (L, without its own BSUInt).
// Errors as encode().
Result<std::size_t> body_size(const Packet& p);

// Appends the whole packet, BSUInt(L) then the body, to `out` (a write buffer: many packets
// gather into one write). Canonical form: shortest BSUInts, F bit 0 set iff channel != 0.
// Allocates nothing when `out` has the capacity; `p.payload` must not view `out` itself.
// On error `out` is left unchanged.
// Errors (errc::invalid_config): flags over kMaxRequestFlags / kMaxResponseFlags; a response
// with an rq_type or a request with `ok`; a request with wire rq_type 0 that is not exactly
// kEof or kErq. errc::message_too_large: the packet would not fit in a std::string.
Error encode(const Packet& p, std::string& out);

// Decodes one body as the length framer delivers it; the payload is a view into `body`.
// Accepts every spelling Python accepts: redundant 0x80 bytes, F bit 0 with channel 0.
// Errors (errc::framing_error), naming the field: a truncated, over-long or overflowing BSUInt;
// a request with wire rq_type 0 that is not exactly EOF or ERQ (Python's "malformed EOF").
Result<Packet> decode_body(std::string_view body);

}  // namespace pipeworks::packet_wire
