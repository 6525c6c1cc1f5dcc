// Fuzzes the packet wire codec. Byte 0 picks the mode:
//   bit 6 clear: the rest is a received stream. It goes through the varint_be128 length framer
//     (max_message 1 MiB) whole and in chunks (bits 0-4 the chunking seed, bit 5 pause after
//     every frame); every frame's body goes through decode_body(), and a packet that decodes
//     must encode and decode again to itself. The stream's front is also read as one BSUInt.
//   bit 6 set: the rest describes a packet to send. Byte 1 gives the byte widths of tag,
//     channel, rq_type and flags (2 bits each: 0, 1, 2 or 8 bytes, little-endian, taken in that
//     order), byte 2 bit 0 is_request and bit 1 ok; the rest is the payload. encode() must
//     refuse exactly what the format cannot carry, and what it writes must decode to the packet.
#include "fuzz_decoder.hpp"
#include "packet/wire.hpp"

#include <array>

using namespace pipeworks;
using namespace pipeworks::fuzz;
using namespace pipeworks::packet_wire;

namespace {

constexpr std::size_t kMaxMessage = 1 << 20;

// Encodes `p`, checks the bytes decode to it, and returns them.
std::string round_trip(const Packet& p) {
    std::string out;
    const Error e = encode(p, out);
    expect(!e, "a packet decode_body() gave encodes");
    const Result<BSUInt> l = read_bsuint(out);
    expect(l.ok(), "an encoded packet starts with its length");
    expect(out.size() - l->size == l->value, "the length counts the body");
    const Result<std::size_t> size = body_size(p);
    expect(size.ok() && *size == l->value, "body_size() is what encode() writes");
    const Result<Packet> back = decode_body(std::string_view(out).substr(l->size));
    expect(back.ok(), "an encoded packet decodes");
    expect(*back == p, "decoding the encoding gives the packet back");
    return out;
}

void check_frame(const Framer&, const Frame& fr) {
    const Result<Packet> r = decode_body(fr.payload);
    if (!r) {
        const Error e = r.error();
        expect(e == errc::framing_error, "a bad body is a framing_error");
        expect(e.message.rfind("packet: ", 0) == 0, "a bad body's error names the packet");
        return;
    }
    const Packet& p = *r;
    expect(p.payload.data() + p.payload.size() == fr.payload.data() + fr.payload.size(),
           "the payload ends the body");
    expect(!(p.ok && p.is_request), "only responses carry ok");
    expect(p.flags <= (p.is_request ? kMaxRequestFlags : kMaxResponseFlags), "flags fit F");
    if (p.is_request && p.rq_type == 0) expect(is_eof(p) || is_erq(p), "rq_type 0 is EOF/ERQ");
    const std::string wire = round_trip(p);
    // The encoding is canonical: never longer than what came in, and as long only when the
    // input spelt every field the same way.
    const std::string_view body = std::string_view(wire).substr(read_bsuint(wire)->size);
    expect(body.size() <= fr.payload.size(), "the canonical body is no longer");
    if (body.size() == fr.payload.size()) expect(body == fr.payload, "canonical input kept");
    if (is_eof(p)) expect(wire == kEofBytes, "EOF encodes as 03 00 02 00");
    if (is_erq(p)) expect(wire == kErqBytes, "ERQ encodes as 03 01 02 00");
}

void check_bsuint(std::string_view in) {
    const Result<BSUInt> r = read_bsuint(in);
    if (!r) {
        expect(r.error() == errc::framing_error, "a bad BSUInt is a framing_error");
        return;
    }
    expect(r->size >= 1 && r->size <= kMaxBSUIntBytes && r->size <= in.size(), "size in range");
    std::string again;
    append_bsuint(r->value, again);
    expect(again.size() == bsuint_size(r->value) && again.size() <= r->size, "shortest form");
    const Result<BSUInt> back = read_bsuint(again);
    expect(back.ok() && back->value == r->value && back->size == again.size(), "round trip");
}

std::uint64_t take_le(Input& in, unsigned width) {
    std::uint64_t v = 0;
    for (unsigned i = 0; i < width; ++i) v |= std::uint64_t{in.byte()} << (8 * i);
    return v;
}

void check_encode(Input& in) {
    static constexpr std::array<unsigned, 4> kWidths = {0, 1, 2, 8};
    const std::uint8_t widths = in.byte();
    const std::uint8_t bits = in.byte();
    Packet p;
    p.tag = take_le(in, kWidths[widths & 3]);
    p.channel = take_le(in, kWidths[(widths >> 2) & 3]);
    p.rq_type = take_le(in, kWidths[(widths >> 4) & 3]);
    p.flags = take_le(in, kWidths[(widths >> 6) & 3]);
    p.is_request = bits & 1;
    p.ok = (bits >> 1) & 1;
    p.payload = in.rest();

    const bool special = p.tag <= 1 && p.channel == 0 && p.flags == 0 && p.payload.empty();
    const bool carried = p.is_request
                             ? p.flags <= kMaxRequestFlags && !p.ok && (p.rq_type != 0 || special)
                             : p.flags <= kMaxResponseFlags && p.rq_type == 0;
    std::string out = "pre";
    const Error e = encode(p, out);
    expect(!e == carried, "encode() refuses exactly what the format cannot carry");
    expect(!e == body_size(p).ok(), "body_size() agrees with encode()");
    if (e) {
        expect(e == errc::invalid_config, "a refused packet is invalid_config");
        expect(!e.message.empty(), "an error has a message");
        expect(out == "pre", "a refused packet leaves the buffer unchanged");
        return;
    }
    expect(out.substr(3) == round_trip(p), "encode() appends, and only the packet");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in(data, size);
    const std::uint8_t mode = in.byte();
    if (mode & 0x40) {
        check_encode(in);
        return 0;
    }
    const std::string_view stream = in.rest();
    check_bsuint(stream);
    Framer f = Framer::length_prefixed(0, LengthEncoding::varint_be128);
    f.max_message = kMaxMessage;
    differential(f, stream, mode & 0x1f, (mode >> 5) & 1, kMaxBSUIntBytes + kMaxMessage,
                 check_frame);
    return 0;
}
