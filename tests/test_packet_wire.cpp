// The packet wire codec: every byte vector of PACKET_WIRE.md both ways, BSUInt limits, flags
// limits, EOF/ERQ and the reserved rq_type 0, and streams of packets split by the varint_be128
// length framer at every byte boundary.
#include "../lib/message/frame_decoder.hpp"
#include "../lib/packet/wire.hpp"
#include "support.hpp"

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace pipeworks;
using namespace pw_test;
using namespace pipeworks::packet_wire;
using namespace std::string_literals;

namespace {

std::string encoded(const Packet& p) {
    std::string out;
    const Error e = encode(p, out);
    REQUIRE_MESSAGE(!e, e.message);
    return out;
}

// The body of a whole packet: what the length framer delivers.
std::string_view body_of(std::string_view packet) {
    const Result<BSUInt> l = read_bsuint(packet);
    REQUIRE(l.ok());
    REQUIRE(packet.size() == l->size + l->value);
    return packet.substr(l->size);
}

Packet request(std::uint64_t tag, std::uint64_t channel, std::uint64_t rq_type, std::uint64_t flags,
               std::string_view payload) {
    return {.tag = tag,
            .channel = channel,
            .is_request = true,
            .rq_type = rq_type,
            .flags = flags,
            .ok = false,
            .payload = payload};
}

Packet response(std::uint64_t tag, std::uint64_t channel, bool ok, std::uint64_t flags,
                std::string_view payload) {
    return {.tag = tag,
            .channel = channel,
            .is_request = false,
            .rq_type = 0,
            .flags = flags,
            .ok = ok,
            .payload = payload};
}

struct BSUIntVector {
    std::uint64_t value;
    std::string bytes;
};

const std::vector<BSUIntVector> kBSUInts = {
    {0, bytes({0x00})},
    {1, bytes({0x01})},
    {127, bytes({0x7f})},
    {128, bytes({0x81, 0x00})},
    {255, bytes({0x81, 0x7f})},
    {300, bytes({0x82, 0x2c})},
    {16383, bytes({0xff, 0x7f})},
    {16384, bytes({0x81, 0x80, 0x00})},
    {1048576, bytes({0xc0, 0x80, 0x00})},
    {std::uint64_t{1} << 32, bytes({0x90, 0x80, 0x80, 0x80, 0x00})},
    {std::uint64_t{1} << 63, bytes({0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00})},
    {UINT64_MAX, bytes({0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})},
};

struct PacketVector {
    const char* what;
    Packet packet;
    std::string bytes;
};

const std::string kHandlerFailure = "exception during handler";

// The Vectors table of PACKET_WIRE.md, then EOF and ERQ.
const std::vector<PacketVector> kPackets = {
    {"request tag 0, ch 0, wire rq_type 1, flags 0, \"hi\"", request(0, 0, 1, 0, "hi"),
     bytes({0x05, 0x00, 0x02, 0x01, 0x68, 0x69})},
    {"its OK response", response(0, 0, true, 0, "hi"), bytes({0x04, 0x00, 0x04, 0x68, 0x69})},
    {"failure response, tag 0", response(0, 0, false, 0, kHandlerFailure),
     bytes({0x1a, 0x00, 0x00}) + kHandlerFailure},
    {"submit(1, \"hi\") on ch 0, tag 2", request(2, 0, 2, 0, "hi"),
     bytes({0x05, 0x02, 0x02, 0x02, 0x68, 0x69})},
    {"submit(0, flags 5, \"abc\", channel 1), tag 0", request(0, 1, 1, 5, "abc"),
     bytes({0x07, 0x00, 0x17, 0x01, 0x01, 0x61, 0x62, 0x63})},
    {"OK response on ch 1, tag 0, rflags 5, \"abc\"", response(0, 1, true, 5, "abc"),
     bytes({0x06, 0x00, 0x2d, 0x01, 0x61, 0x62, 0x63})},
    {"OK response tag 3, rflags 2, empty", response(3, 0, true, 2, ""), bytes({0x02, 0x03, 0x14})},
    {"OK response tag 5, rflags 1048576, empty", response(5, 0, true, 1048576, ""),
     bytes({0x05, 0x05, 0x84, 0x80, 0x80, 0x04})},
    {"request tag 300, ch 200, wire rq_type 128, empty", request(300, 200, 128, 0, ""),
     bytes({0x07, 0x82, 0x2c, 0x03, 0x81, 0x48, 0x81, 0x00})},
    {"EOF", kEof, std::string(kEofBytes)},
    {"ERQ", kErq, std::string(kErqBytes)},
};

// Decodes `pieces` through the varint_be128 length framer, as a pipe would: each piece goes
// through one read buffer that is overwritten after every feed. Every frame is decoded with
// decode_body() and checked against the next expected packet inside the callback, while the
// payload view is valid.
void decode_stream(const std::vector<std::string_view>& pieces, const std::vector<Packet>& expected,
                   std::size_t max_message = 1 << 20) {
    Framer framer = Framer::length_prefixed(0, LengthEncoding::varint_be128);
    framer.max_message = max_message;
    FrameDecoder decoder(framer);
    std::size_t n = 0;
    std::string read_buffer;
    for (std::string_view piece : pieces) {
        read_buffer.assign(piece);
        const Error e = decoder.feed(read_buffer, [&](const Frame& f) {
            const Result<Packet> p = decode_body(f.payload);
            REQUIRE_MESSAGE(p.ok(), p.error().message);
            REQUIRE(n < expected.size());
            CHECK(*p == expected[n]);
            ++n;
        });
        REQUIRE_MESSAGE(!e, e.message);
        read_buffer.assign(read_buffer.size(), '\xAA');
    }
    CHECK(n == expected.size());
    CHECK(decoder.buffered() == 0);
}

}  // namespace

// ---------------------------------------------------------------- BSUInt

TEST_CASE("BSUInt: PACKET_WIRE.md's vectors both ways") {
    for (const BSUIntVector& v : kBSUInts) {
        CAPTURE(v.value);
        std::string out = "x";
        append_bsuint(v.value, out);
        CHECK(out == "x" + v.bytes);
        CHECK(bsuint_size(v.value) == v.bytes.size());

        const Result<BSUInt> r = read_bsuint(v.bytes + "tail");
        REQUIRE_MESSAGE(r.ok(), r.error().message);
        CHECK(r->value == v.value);
        CHECK(r->size == v.bytes.size());
    }
    static_assert(bsuint_size(0) == 1 && bsuint_size(127) == 1 && bsuint_size(128) == 2);
    static_assert(bsuint_size(UINT64_MAX) == kMaxBSUIntBytes);
}

TEST_CASE("BSUInt: redundant leading 0x80 bytes are accepted up to 10 bytes in all") {
    const Result<BSUInt> three = read_bsuint(bytes({0x80, 0x03}));
    REQUIRE(three.ok());
    CHECK(three->value == 3);
    CHECK(three->size == 2);

    const Result<BSUInt> ten = read_bsuint(std::string(9, '\x80') + '\x03');
    REQUIRE(ten.ok());
    CHECK(ten->value == 3);
    CHECK(ten->size == 10);

    const Result<BSUInt> zero = read_bsuint(std::string(9, '\x80') + '\0');
    REQUIRE(zero.ok());
    CHECK(zero->value == 0);
}

TEST_CASE("BSUInt: longer than 10 bytes, over 64 bits or truncated is an error") {
    struct Case {
        std::string bytes;
        std::string_view why;
    };
    const std::vector<Case> cases = {
        {std::string(10, '\x80') + '\x03', "longer than 10 bytes"},
        // UINT64_MAX is 10 bytes already; one redundant byte more is too many.
        {bytes({0x80, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}),
         "longer than 10 bytes"},
        // Ten continuation bytes are wrong whatever would follow.
        {std::string(10, '\x80'), "longer than 10 bytes"},
        // Its tenth group is already too many bits, whatever the length.
        {std::string(20, '\xff'), "overflows 64 bits"},
        {bytes({0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), "overflows 64 bits"},
        {bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}), "overflows 64 bits"},
        {"", "missing"},
        {bytes({0x81}), "truncated"},
        {bytes({0x81, 0x80}), "truncated"},
        {std::string(9, '\x80'), "truncated"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.why);
        CAPTURE(c.bytes.size());
        const Result<BSUInt> r = read_bsuint(c.bytes);
        REQUIRE(!r.ok());
        CHECK(r.error() == errc::framing_error);
        CHECK_MESSAGE(mentions(r.error(), c.why), r.error().message);
    }
    CHECK(mentions(read_bsuint(bytes({0x81, 0x80})).error(), "ends after 2 bytes"));
}

TEST_CASE("BSUInt: every value round-trips at every size") {
    std::mt19937_64 rng(7);
    for (unsigned bits = 0; bits <= 64; ++bits) {
        for (int i = 0; i < 20; ++i) {
            std::uint64_t v = bits == 64 ? rng() : rng() & ((std::uint64_t{1} << bits) - 1);
            if (bits > 0) v |= std::uint64_t{1} << (bits - 1);
            CAPTURE(v);
            std::string out;
            append_bsuint(v, out);
            CHECK(out.size() == bsuint_size(v));
            CHECK(out.size() == (bits == 0 ? 1 : (bits + 6) / 7));
            const Result<BSUInt> r = read_bsuint(out);
            REQUIRE(r.ok());
            CHECK(r->value == v);
            CHECK(r->size == out.size());
        }
    }
}

// ---------------------------------------------------------------- packets

TEST_CASE("Packet: PACKET_WIRE.md's vectors encode to exactly their bytes") {
    for (const PacketVector& v : kPackets) {
        CAPTURE(v.what);
        CHECK(encoded(v.packet) == v.bytes);
        const Result<std::size_t> size = body_size(v.packet);
        REQUIRE(size.ok());
        CHECK(*size == body_of(v.bytes).size());
    }
}

TEST_CASE("Packet: PACKET_WIRE.md's vectors decode to exactly their fields") {
    for (const PacketVector& v : kPackets) {
        CAPTURE(v.what);
        const std::string_view body = body_of(v.bytes);
        const Result<Packet> p = decode_body(body);
        REQUIRE_MESSAGE(p.ok(), p.error().message);
        CHECK(p->tag == v.packet.tag);
        CHECK(p->channel == v.packet.channel);
        CHECK(p->is_request == v.packet.is_request);
        CHECK(p->rq_type == v.packet.rq_type);
        CHECK(p->flags == v.packet.flags);
        CHECK(p->ok == v.packet.ok);
        CHECK(p->payload == v.packet.payload);
        // The payload is a view into the body, not a copy.
        CHECK(p->payload.data() + p->payload.size() == body.data() + body.size());
    }
}

TEST_CASE("Packet: encode appends, and allocates nothing when the buffer has room") {
    std::string all;
    for (const PacketVector& v : kPackets) all += v.bytes;

    std::string out;
    out.reserve(all.size());
    const char* const data = out.data();
    for (const PacketVector& v : kPackets) REQUIRE(!encode(v.packet, out));
    CHECK(out == all);
    CHECK(out.data() == data);

    // A buffer without room grows to hold the packet.
    std::string small;
    const std::string big(100000, 'p');
    REQUIRE(!encode(request(2, 0, 1, 0, big), small));
    CHECK(small.size() == 3 + 3 + big.size());
    CHECK(small.substr(0, 3) == bytes({0x86, 0x8d, 0x23}));  // L = 100003
}

TEST_CASE("Packet: the flags limits of F are enforced on encode, reached on decode") {
    // The largest flags fit exactly.
    for (const Packet& p :
         {request(7, 3, 9, kMaxRequestFlags, "x"), response(7, 3, true, kMaxResponseFlags, "x"),
          response(7, 0, false, kMaxResponseFlags, "")}) {
        const std::string wire = encoded(p);
        const Result<Packet> back = decode_body(body_of(wire));
        REQUIRE_MESSAGE(back.ok(), back.error().message);
        CHECK(*back == p);
    }
    CHECK(kMaxRequestFlags == (std::uint64_t{1} << 62) - 1);
    CHECK(kMaxResponseFlags == (std::uint64_t{1} << 61) - 1);

    // One more does not: it would lose its top bits in F.
    for (const Packet& p :
         {request(7, 3, 9, kMaxRequestFlags + 1, "x"), request(7, 3, 9, UINT64_MAX, "x"),
          response(7, 3, true, kMaxResponseFlags + 1, "x"),
          response(7, 0, false, UINT64_MAX, "")}) {
        CAPTURE(p.flags);
        std::string out = "kept";
        const Error e = encode(p, out);
        REQUIRE(e);
        CHECK(e == errc::invalid_config);
        CHECK_MESSAGE(mentions(e, "flags " + std::to_string(p.flags) + " do not fit"), e.message);
        CHECK(out == "kept");
        CHECK(!body_size(p).ok());
    }

    // F = 2^64 - 1 on the wire: a request on a channel with the largest flags.
    const std::string body =
        bytes({0x00, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x05, 0x01});
    const Result<Packet> p = decode_body(body);
    REQUIRE(p.ok());
    CHECK(*p == request(0, 5, 1, kMaxRequestFlags, ""));
    // The same F without the request bit: a response with the largest flags.
    const Result<Packet> r = decode_body(
        bytes({0x00, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7d, 0x05}));
    REQUIRE(r.ok());
    CHECK(*r == response(0, 5, true, kMaxResponseFlags, ""));
}

TEST_CASE("Packet: fields that belong to the other kind are refused on encode") {
    Packet r = response(1, 0, true, 0, "");
    r.rq_type = 4;
    std::string out;
    Error e = encode(r, out);
    CHECK(e == errc::invalid_config);
    CHECK_MESSAGE(mentions(e, "a response has no rq_type"), e.message);

    Packet q = request(1, 0, 4, 0, "");
    q.ok = true;
    e = encode(q, out);
    CHECK(e == errc::invalid_config);
    CHECK_MESSAGE(mentions(e, "a request has no ok"), e.message);
    CHECK(out.empty());
}

TEST_CASE("Packet: every spelling Python accepts decodes, and re-encodes canonically") {
    struct Case {
        std::string body;
        Packet packet;
    };
    const std::vector<Case> cases = {
        // F bit 0 with channel 0.
        {bytes({0x00, 0x07, 0x00, 0x01}) + "hi", request(0, 0, 1, 1, "hi")},
        {bytes({0x00, 0x05, 0x00}) + "hi", response(0, 0, true, 0, "hi")},
        // Redundant 0x80 bytes in every field.
        {bytes({0x80, 0x00, 0x80, 0x80, 0x03, 0x80, 0x01, 0x80, 0x80, 0x81, 0x00}) + "x",
         request(0, 1, 128, 0, "x")},
    };
    for (const Case& c : cases) {
        const Result<Packet> p = decode_body(c.body);
        REQUIRE_MESSAGE(p.ok(), p.error().message);
        CHECK(*p == c.packet);
        const std::string again = encoded(*p);
        CHECK(body_of(again).size() < c.body.size());
        CHECK(*decode_body(body_of(again)) == c.packet);
    }
}

TEST_CASE("Packet: truncated bodies name the field that is cut") {
    for (const PacketVector& v : kPackets) {
        CAPTURE(v.what);
        const std::string_view body = body_of(v.bytes);
        const std::size_t header = body.size() - v.packet.payload.size();
        for (std::size_t cut = 0; cut < header; ++cut) {
            CAPTURE(cut);
            const Result<Packet> p = decode_body(body.substr(0, cut));
            REQUIRE(!p.ok());
            CHECK(p.error() == errc::framing_error);
            CHECK_MESSAGE(mentions(p.error(), "packet: "), p.error().message);
            const bool cut_bsuint =
                mentions(p.error(), "truncated") || mentions(p.error(), "missing");
            CHECK_MESSAGE(cut_bsuint, p.error().message);
        }
        // Cutting into the payload is a shorter payload: the length prefix is what bounds it.
        if (!v.packet.payload.empty()) {
            const Result<Packet> p = decode_body(body.substr(0, body.size() - 1));
            REQUIRE(p.ok());
            CHECK(p->payload == v.packet.payload.substr(0, v.packet.payload.size() - 1));
        }
    }
    const struct {
        std::string body;
        std::string_view field;
    } named[] = {
        {"", "tag: BSUInt missing"},
        {bytes({0x81}), "tag: BSUInt truncated"},
        {bytes({0x00}), "F: BSUInt missing"},
        {bytes({0x00, 0x83}), "F: BSUInt truncated"},
        {bytes({0x00, 0x01}), "channel: BSUInt missing"},
        {bytes({0x00, 0x03, 0x01}), "rq_type: BSUInt missing"},
        {bytes({0x00, 0x03, 0x01, 0xff}), "rq_type: BSUInt truncated"},
    };
    for (const auto& n : named) {
        const Result<Packet> p = decode_body(n.body);
        REQUIRE(!p.ok());
        CHECK_MESSAGE(mentions(p.error(), n.field), p.error().message);
    }
}

TEST_CASE("Packet: an over-long or overflowing BSUInt in any field is refused, named") {
    const std::string longer = std::string(10, '\x80') + '\x01';
    const std::string over = bytes({0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00});
    for (const bool is_long : {true, false}) {
        const std::string& bad = is_long ? longer : over;
        const struct {
            std::string body;
            std::string_view field;
        } cases[] = {
            {bad + bytes({0x02, 0x01}), "tag: "},
            {bytes({0x00}) + bad + bytes({0x01}), "F: "},
            {bytes({0x00, 0x03}) + bad + bytes({0x01}), "channel: "},
            {bytes({0x00, 0x02}) + bad, "rq_type: "},
        };
        for (const auto& c : cases) {
            const Result<Packet> p = decode_body(c.body);
            REQUIRE(!p.ok());
            CHECK(p.error() == errc::framing_error);
            CHECK_MESSAGE(mentions(p.error(), c.field), p.error().message);
            CHECK_MESSAGE(
                mentions(p.error(), is_long ? "longer than 10 bytes" : "overflows 64 bits"),
                p.error().message);
        }
    }
}

// ---------------------------------------------------------------- EOF, ERQ, rq_type 0

TEST_CASE("EOF and ERQ: recognised by their fields, whatever the spelling") {
    CHECK(is_eof(kEof));
    CHECK(!is_erq(kEof));
    CHECK(is_erq(kErq));
    CHECK(!is_eof(kErq));
    CHECK(encoded(kEof) == bytes({0x03, 0x00, 0x02, 0x00}));
    CHECK(encoded(kErq) == bytes({0x03, 0x01, 0x02, 0x00}));

    const Result<Packet> eof = decode_body(body_of(kEofBytes));
    REQUIRE(eof.ok());
    CHECK(is_eof(*eof));
    const Result<Packet> erq = decode_body(body_of(kErqBytes));
    REQUIRE(erq.ok());
    CHECK(is_erq(*erq));

    // F bit 0 with channel 0, and redundant bytes: still EOF / ERQ, as in Python.
    const Result<Packet> eof_ch = decode_body(bytes({0x00, 0x03, 0x00, 0x00}));
    REQUIRE(eof_ch.ok());
    CHECK(is_eof(*eof_ch));
    const Result<Packet> erq_long = decode_body(bytes({0x80, 0x01, 0x80, 0x02, 0x80, 0x00}));
    REQUIRE(erq_long.ok());
    CHECK(is_erq(*erq_long));

    // Ordinary packets are neither.
    for (const PacketVector& v : kPackets) {
        if (v.packet == kEof || v.packet == kErq) continue;
        CAPTURE(v.what);
        CHECK(!is_eof(v.packet));
        CHECK(!is_erq(v.packet));
    }
    // A response that looks like them is a response.
    CHECK(!is_eof(response(0, 0, false, 0, "")));
}

TEST_CASE("rq_type 0: a request that is not exactly EOF or ERQ is refused both ways") {
    struct Case {
        Packet packet;
        std::string body;  // the same packet as a received body
        std::string_view why;
    };
    const std::vector<Case> cases = {
        {request(2, 0, 0, 0, ""), bytes({0x02, 0x02, 0x00}), "tag 2 (EOF has tag 0, ERQ tag 1)"},
        {request(300, 0, 0, 0, ""), bytes({0x82, 0x2c, 0x02, 0x00}), "tag 300"},
        {request(0, 1, 0, 0, ""), bytes({0x00, 0x03, 0x01, 0x00}), "channel 1 (must be 0)"},
        {request(1, 0, 0, 4, ""), bytes({0x01, 0x12, 0x00}), "flags 4 (must be 0)"},
        {request(0, 0, 0, 0, "x"), bytes({0x00, 0x02, 0x00, 'x'}),
         "a payload of 1 bytes (must be empty)"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.why);
        const Result<Packet> p = decode_body(c.body);
        REQUIRE(!p.ok());
        CHECK(p.error() == errc::framing_error);
        CHECK_MESSAGE(mentions(p.error(), "reserved wire rq_type 0 is neither EOF nor ERQ"),
                      p.error().message);
        CHECK_MESSAGE(mentions(p.error(), c.why), p.error().message);

        std::string out;
        const Error e = encode(c.packet, out);
        CHECK(e == errc::invalid_config);
        CHECK_MESSAGE(mentions(e, c.why), e.message);
        CHECK(out.empty());
        CHECK(!body_size(c.packet).ok());
    }
    // Responses have no rq_type: tag 7 with F = 0 is an ordinary failure response.
    const Result<Packet> r = decode_body(bytes({0x07, 0x00}));
    REQUIRE(r.ok());
    CHECK(*r == response(7, 0, false, 0, ""));
}

// ---------------------------------------------------------------- streams

TEST_CASE("Stream: packets through the varint_be128 length framer, split at every byte") {
    std::vector<Packet> expected;
    std::string stream;
    const std::string mid(300, 'm');  // a two-byte L
    for (const PacketVector& v : kPackets) {
        expected.push_back(v.packet);
        stream += v.bytes;
    }
    expected.push_back(request(16384, 70000, 200, 3, mid));
    expected.push_back(response(16384, 70000, true, 1 << 20, mid));
    expected.push_back(response(UINT64_MAX, UINT64_MAX, false, kMaxResponseFlags, ""));
    expected.push_back(request(UINT64_MAX, UINT64_MAX, UINT64_MAX, kMaxRequestFlags, "z"));
    expected.push_back(kEof);
    for (std::size_t i = kPackets.size(); i < expected.size(); ++i) stream += encoded(expected[i]);
    // A Python peer may spell L with redundant bytes too.
    stream += bytes({0x80, 0x04, 0x00, 0x04, 0x68, 0x69});
    expected.push_back(response(0, 0, true, 0, "hi"));

    decode_stream({stream}, expected);
    for (std::size_t split = 0; split <= stream.size(); ++split) {
        CAPTURE(split);
        decode_stream(
            {std::string_view(stream).substr(0, split), std::string_view(stream).substr(split)},
            expected);
    }
    std::vector<std::string_view> one_by_one;
    for (std::size_t i = 0; i < stream.size(); ++i)
        one_by_one.push_back(std::string_view(stream).substr(i, 1));
    decode_stream(one_by_one, expected);
}

TEST_CASE("Stream: random packets in random chunks, and a 1 MiB payload as one packet") {
    std::mt19937_64 rng(42);
    auto pick = [&](unsigned max_bits) {
        const unsigned bits = static_cast<unsigned>(rng() % (max_bits + 1));
        return bits == 0 ? 0 : rng() >> (64 - bits);
    };
    std::vector<std::string> payloads;
    for (int i = 0; i < 200; ++i) payloads.push_back(std::string(rng() % 40, static_cast<char>(i)));
    std::vector<Packet> expected;
    std::string stream;
    for (int i = 0; i < 200; ++i) {
        // One draw per statement: argument order is unspecified, and the packets should not
        // depend on the compiler.
        Packet p;
        p.is_request = rng() % 2;
        p.tag = pick(64);
        p.channel = pick(64);
        if (p.is_request) p.rq_type = 1 + pick(63);
        if (!p.is_request) p.ok = rng() % 2;
        p.flags = pick(p.is_request ? 62 : 61);
        p.payload = payloads[i];
        expected.push_back(p);
        REQUIRE(!encode(p, stream));
    }
    for (int round = 0; round < 20; ++round) {
        std::vector<std::string_view> pieces;
        for (std::size_t at = 0; at < stream.size();) {
            const std::size_t n = std::min<std::size_t>(1 + rng() % 64, stream.size() - at);
            pieces.push_back(std::string_view(stream).substr(at, n));
            at += n;
        }
        decode_stream(pieces, expected);
    }

    const std::string mib(1 << 20, 'M');
    const Packet big = request(2, 0, 1, 0, mib);
    const std::string wire = encoded(big);
    CHECK(wire.size() == 3 + 3 + mib.size());
    decode_stream({wire}, {big}, (1 << 20) + 3);
    decode_stream({std::string_view(wire).substr(0, 2), std::string_view(wire).substr(2, 1000),
                   std::string_view(wire).substr(1002)},
                  {big}, (1 << 20) + 3);
}

TEST_CASE("Stream: a body over max_message is the length framer's error, before any body") {
    Framer framer = Framer::length_prefixed(0, LengthEncoding::varint_be128);
    framer.max_message = 1 << 20;
    FrameDecoder decoder(framer);
    // L = 2^40: refused from the prefix alone, with nothing kept.
    const std::string prefix = bytes({0xa0, 0x80, 0x80, 0x80, 0x80, 0x00});
    bool called = false;
    const Error e = decoder.feed(prefix, [&](const Frame&) { called = true; });
    CHECK(e == errc::framing_error);
    CHECK(!called);
    CHECK(decoder.heap_capacity() == 0);
}
