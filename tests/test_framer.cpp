// The message layer: Framer validation, encode(), and FrameDecoder over every framer, with
// streams split at every byte boundary, limits, pauses, UDP datagrams and garbage.
#include "../lib/message/frame_decoder.hpp"
#include "support.hpp"

#include <nlohmann/json.hpp>

#include <bit>
#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace pipeworks;
using namespace pw_test;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

struct Got {
    std::string message;
    std::string payload;
    std::string frame;
};

struct Decoded {
    std::vector<Got> frames;
    Error error;
    std::size_t max_buffered = 0;  // the most bytes the decoder kept between feeds
};

// Feeds `pieces` one after another as a pipe would: each piece is copied into one read buffer
// that is overwritten after every feed, so a view the decoder kept past feed() shows garbage.
Decoded decode_pieces(FrameDecoder& d, const std::vector<std::string_view>& pieces) {
    Decoded out;
    std::string read_buffer;
    for (std::string_view piece : pieces) {
        read_buffer.assign(piece);
        Error e = d.feed(read_buffer, [&](const Frame& f) {
            out.frames.push_back(
                {std::string(f.message), std::string(f.payload), std::string(f.frame)});
        });
        read_buffer.assign(read_buffer.size(), '\xAA');
        out.max_buffered = std::max(out.max_buffered, d.buffered());
        if (e) {
            out.error = e;
            break;
        }
    }
    return out;
}

Decoded decode_pieces(const Framer& f, const std::vector<std::string_view>& pieces) {
    FrameDecoder d(f);
    return decode_pieces(d, pieces);
}

std::vector<std::string> messages_of(const Decoded& d) {
    std::vector<std::string> v;
    for (const Got& g : d.frames) v.push_back(g.message);
    return v;
}

// The stream split at every boundary in two pieces, and byte by byte, must give `expected`.
void check_all_splits(const Framer& f, std::string_view stream,
                      const std::vector<std::string>& expected) {
    {
        const Decoded whole = decode_pieces(f, {stream});
        REQUIRE_MESSAGE(!whole.error, whole.error.message);
        CHECK(messages_of(whole) == expected);
        CHECK(whole.max_buffered == 0);
    }
    for (std::size_t split = 0; split <= stream.size(); ++split) {
        CAPTURE(split);
        const Decoded two = decode_pieces(f, {stream.substr(0, split), stream.substr(split)});
        REQUIRE_MESSAGE(!two.error, two.error.message);
        REQUIRE(messages_of(two) == expected);
    }
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < stream.size(); ++i) bytes.push_back(stream.substr(i, 1));
    const Decoded one_by_one = decode_pieces(f, bytes);
    REQUIRE_MESSAGE(!one_by_one.error, one_by_one.error.message);
    CHECK(messages_of(one_by_one) == expected);
}

// Encodes every payload with `f` into one stream.
std::string encode_all(const Framer& f, const std::vector<std::string>& payloads) {
    std::string out;
    for (const std::string& p : payloads) {
        Error e = encode(f, p, out);
        REQUIRE_MESSAGE(!e, e.message);
    }
    return out;
}

const std::vector<std::string> kSamples = {"hello",    "",    "a", std::string(200, 'x'),
                                           "\n\r\0z"s, "last"};

}  // namespace

// ---------------------------------------------------------------- validation

TEST_CASE("Framer helpers describe the documented framings") {
    CHECK(Framer::raw().kind == FramerKind::raw);
    const Framer m = Framer::message();
    CHECK(m.kind == FramerKind::length_field);
    CHECK(m.length.width == 4);
    CHECK(m.length.encoding == LengthEncoding::big_endian);
    CHECK(m.length.offset == 0);
    CHECK(m.length.adjustment == 0);
    CHECK(m.length.strip_header);
    CHECK(m.max_message == 16u * 1024 * 1024);
    const Framer l = Framer::lines();
    CHECK(l.kind == FramerKind::delimiter);
    CHECK(l.delimiter.bytes == "\n");
    CHECK(l.delimiter.strip);
    CHECK(Framer::delimited("\r\n", false).delimiter.bytes == "\r\n");
    CHECK(!Framer::delimited("\r\n", false).delimiter.strip);
    CHECK(Framer::fixed(12).fixed_size.size == 12);
    CHECK(Framer::json_header().kind == FramerKind::json_header);
    CHECK(Framer::json_header().json.max_header == 64u * 1024);
    CHECK(std::string_view(to_string(FramerKind::json_header)) == "json_header");
    CHECK(std::string_view(to_string(LengthEncoding::varint_be128)) == "varint_be128");
    for (const Framer& f : {Framer::raw(), Framer::message(), Framer::lines(), Framer::fixed(3),
                            Framer::json_header(), Framer::length_prefixed(1),
                            Framer::length_prefixed(8, LengthEncoding::little_endian),
                            Framer::length_prefixed(0, LengthEncoding::varint_leb128),
                            Framer::length_prefixed(0, LengthEncoding::varint_be128)}) {
        CAPTURE(std::string(to_string(f.kind)));
        CHECK(!f.validate(Transport::tcp));
    }
}

TEST_CASE("Framer::validate names the bad field") {
    struct Case {
        Framer framer;
        std::string_view field;
    };
    std::vector<Case> cases;
    auto add = [&](auto change, std::string_view field) {
        Framer f = Framer::message();
        change(f);
        cases.push_back({f, field});
    };
    add([](Framer& f) { f.length.width = 3; }, "Framer.length.width: must be 1, 2, 4 or 8");
    add([](Framer& f) { f.length.width = 0; }, "Framer.length.width");
    add([](Framer& f) { f.length.encoding = static_cast<LengthEncoding>(9); },
        "Framer.length.encoding");
    add([](Framer& f) { f.kind = static_cast<FramerKind>(42); }, "Framer.kind");
    add([](Framer& f) { f.max_message = 0; }, "Framer.max_message");
    add([](Framer& f) { f.max_message = SIZE_MAX; }, "Framer.max_message");
    add([](Framer& f) { f.length.offset = SIZE_MAX - 2; }, "Framer.length.offset");
    add([](Framer& f) { f.length.offset = SIZE_MAX / 2; }, "Framer.length.offset");
    add([](Framer& f) { f.length.adjustment = (16 << 20) + 1; }, "Framer.length.adjustment");
    add(
        [](Framer& f) {
            f.length.width = 1;
            f.length.adjustment = -256;
        },
        "Framer.length.adjustment");
    add(
        [](Framer& f) {
            f.length.width = 8;
            f.length.adjustment = INT64_MAX;
        },
        "Framer.length.adjustment");
    add([](Framer& f) { f = Framer::delimited(""); }, "Framer.delimiter.bytes");
    add([](Framer& f) { f = Framer::delimited("123456789"); }, "Framer.delimiter.bytes");
    add([](Framer& f) { f = Framer::fixed(0); }, "Framer.fixed_size.size");
    add(
        [](Framer& f) {
            f = Framer::fixed(100);
            f.max_message = 99;
        },
        "Framer.fixed_size.size");
    add(
        [](Framer& f) {
            f = Framer::json_header();
            f.json.max_header = 1;
        },
        "Framer.json.max_header");
    for (const Case& c : cases) {
        CAPTURE(c.field);
        const Error e = c.framer.validate(Transport::tcp);
        REQUIRE(e);
        CHECK(e == errc::invalid_config);
        CHECK_MESSAGE(mentions(e, c.field), e.message);
    }
    // The boundaries that are fine.
    Framer ok = Framer::message();
    ok.length.width = 1;
    ok.length.adjustment = -255;
    CHECK(!ok.validate(Transport::tcp));
    ok.length = {};
    ok.length.encoding = LengthEncoding::varint_be128;
    ok.length.adjustment = INT64_MIN;  // a varint may hold any length
    CHECK(!ok.validate(Transport::tcp));
    ok.length.adjustment = static_cast<std::int64_t>(ok.max_message);
    CHECK(!ok.validate(Transport::tcp));
    ok.max_message = std::size_t{1} << 62;
    ok.length.offset = 1u << 20;
    CHECK(!ok.validate(Transport::tcp));
    CHECK(!Framer::delimited("12345678").validate(Transport::tcp));
    Framer raw = Framer::raw();
    raw.max_message = 0;  // raw reads no limit
    CHECK(!raw.validate(Transport::tcp));
}

TEST_CASE("On UDP only raw and length_field apply") {
    CHECK(!Framer::raw().validate(Transport::udp));
    CHECK(!Framer::message().validate(Transport::udp));
    for (const Framer& f : {Framer::lines(), Framer::fixed(4), Framer::json_header()}) {
        CAPTURE(std::string(to_string(f.kind)));
        const Error e = f.validate(Transport::udp);
        REQUIRE(e);
        CHECK(e == errc::invalid_config);
        CHECK(mentions(e, "Framer.kind"));
        CHECK(mentions(e, "datagram"));
        CHECK(!f.validate(Transport::tcp));
        // A decoder made from it reports the same error instead of decoding.
        FrameDecoder d(f, FrameInput::datagrams);
        int n = 0;
        CHECK(d.feed("abc\n", [&](const Frame&) { ++n; }) == errc::invalid_config);
        CHECK(n == 0);
    }
}

// ---------------------------------------------------------------- raw

TEST_CASE("Raw: each feed is one message, not copied") {
    FrameDecoder d(Framer::raw());
    std::string buf = "some bytes";
    int n = 0;
    CHECK(!d.feed(buf, [&](const Frame& f) {
        ++n;
        CHECK(f.message.data() == buf.data());
        CHECK(f.message.size() == buf.size());
        CHECK(f.payload == buf);
        CHECK(f.frame == buf);
    }));
    CHECK(!d.feed({}, [&](const Frame&) { ++n; }));  // an empty read is no message
    CHECK(n == 1);
    CHECK(d.buffered() == 0);
    CHECK(d.heap_capacity() == 0);
    std::string out;
    CHECK(!encode(Framer::raw(), "as is", out));
    CHECK(out == "as is");
}

// ---------------------------------------------------------------- length field

TEST_CASE("Length field: widths 1, 2, 4, 8 in both byte orders") {
    struct Case {
        unsigned width;
        LengthEncoding enc;
        std::string header_of_hi;  // the field for a 2-byte payload
    };
    const std::vector<Case> cases = {
        {1, LengthEncoding::big_endian, bytes({2})},
        {1, LengthEncoding::little_endian, bytes({2})},
        {2, LengthEncoding::big_endian, bytes({0, 2})},
        {2, LengthEncoding::little_endian, bytes({2, 0})},
        {4, LengthEncoding::big_endian, bytes({0, 0, 0, 2})},
        {4, LengthEncoding::little_endian, bytes({2, 0, 0, 0})},
        {8, LengthEncoding::big_endian, bytes({0, 0, 0, 0, 0, 0, 0, 2})},
        {8, LengthEncoding::little_endian, bytes({2, 0, 0, 0, 0, 0, 0, 0})},
    };
    for (const Case& c : cases) {
        CAPTURE(c.width);
        CAPTURE(std::string(to_string(c.enc)));
        const Framer f = Framer::length_prefixed(c.width, c.enc);
        std::string out;
        REQUIRE(!encode(f, "hi", out));
        CHECK(out == c.header_of_hi + "hi");
        check_all_splits(f, encode_all(f, kSamples), kSamples);
    }
    // A multi-byte value in each order: 0x0102 = 258.
    const std::string body(258, 'q');
    std::string be;
    REQUIRE(!encode(Framer::length_prefixed(2), body, be));
    CHECK(be.substr(0, 2) == bytes({1, 2}));
    std::string le;
    REQUIRE(!encode(Framer::length_prefixed(2, LengthEncoding::little_endian), body, le));
    CHECK(le.substr(0, 2) == bytes({2, 1}));
    const Decoded d = decode_pieces(Framer::length_prefixed(2, LengthEncoding::little_endian),
                                    {le.substr(0, 1), le.substr(1)});
    REQUIRE(d.frames.size() == 1);
    CHECK(d.frames[0].message == body);
}

TEST_CASE("Length field: the default message framing, many messages in one feed") {
    const Framer f = Framer::message();
    std::vector<std::string> payloads;
    for (int i = 0; i < 1000; ++i) payloads.push_back(std::string(i % 37, static_cast<char>(i)));
    const std::string stream = encode_all(f, payloads);
    FrameDecoder d(f);
    std::size_t n = 0;
    REQUIRE(!d.feed(stream, [&](const Frame& fr) {
        REQUIRE(n < payloads.size());
        CHECK(fr.message == payloads[n]);
        // Whole frames are views into the read, not copies.
        CHECK(fr.frame.data() >= stream.data());
        CHECK(fr.frame.data() + fr.frame.size() <= stream.data() + stream.size());
        ++n;
    }));
    CHECK(n == payloads.size());
    CHECK(d.buffered() == 0);
    CHECK(d.heap_capacity() == 0);
}

TEST_CASE("Length field: empty messages") {
    const Framer f = Framer::message();
    const std::vector<std::string> empties(5, "");
    const std::string stream = encode_all(f, empties);
    CHECK(stream == std::string(20, '\0'));
    check_all_splits(f, stream, empties);
}

namespace {

struct VarintVector {
    std::uint64_t value;
    std::string bytes;
};

// BSUInt vectors of PACKET_WIRE.md.
const std::vector<VarintVector> kBe128 = {
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

const std::vector<VarintVector> kLeb128 = {
    {0, bytes({0x00})},
    {127, bytes({0x7f})},
    {128, bytes({0x80, 0x01})},
    {300, bytes({0xac, 0x02})},
    {16384, bytes({0x80, 0x80, 0x01})},
    {std::uint64_t{1} << 32, bytes({0x80, 0x80, 0x80, 0x80, 0x10})},
    {std::uint64_t{1} << 63, bytes({0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})},
    {UINT64_MAX, bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})},
};

// A varint framer whose adjustment turns the field value `v` into a 3-byte body, so that
// values far beyond any real message can be decoded and encoded exactly.
Framer varint_for(LengthEncoding enc, std::uint64_t v) {
    Framer f = Framer::length_prefixed(0, enc);
    // adjustment = 3 - v, computed without overflow (two's complement wrap is the intent).
    f.length.adjustment = static_cast<std::int64_t>(std::uint64_t{3} - v);
    return f;
}

}  // namespace

TEST_CASE("Length field: varint_be128 is PACKET_WIRE.md's BSUInt") {
    for (const VarintVector& v : kBe128) {
        CAPTURE(v.value);
        if (v.value > static_cast<std::uint64_t>(INT64_MAX) + 3) continue;  // adjustment range
        const Framer f = varint_for(LengthEncoding::varint_be128, v.value);
        std::string out;
        REQUIRE(!encode(f, "abc", out));
        CHECK(out == v.bytes + "abc");
        check_all_splits(f, v.bytes + "abc" + v.bytes + "abc",
                         std::vector<std::string>{"abc", "abc"});
    }
    // Plain length prefixes, with real bodies.
    const Framer f = Framer::length_prefixed(0, LengthEncoding::varint_be128);
    std::string out;
    REQUIRE(!encode(f, std::string(300, 'z'), out));
    CHECK(out.substr(0, 2) == bytes({0x82, 0x2c}));
    check_all_splits(f, encode_all(f, kSamples), kSamples);
    // Redundant leading 0x80 groups are accepted: 80 03 = 3.
    const Decoded d = decode_pieces(f, {bytes({0x80, 0x03}) + "xyz" + bytes({0x80, 0x80, 0x00})});
    REQUIRE(!d.error);
    CHECK(messages_of(d) == std::vector<std::string>{"xyz", ""});
}

TEST_CASE("Length field: the largest 64-bit varints decode exactly") {
    // 2^63 and 2^64 - 1 need an adjustment outside int64 for a 3-byte body; check that the
    // value is read exactly through the error message instead.
    for (const auto& [enc, vectors] : {std::pair{LengthEncoding::varint_be128, kBe128},
                                       std::pair{LengthEncoding::varint_leb128, kLeb128}}) {
        for (const VarintVector& v : vectors) {
            CAPTURE(v.value);
            Framer f = Framer::length_prefixed(0, enc);
            const Decoded d = decode_pieces(f, {v.bytes});
            if (v.value <= f.max_message) continue;
            REQUIRE(d.error);
            CHECK(d.error == errc::framing_error);
            CHECK_MESSAGE(mentions(d.error, "declares " + std::to_string(v.value) + " bytes"),
                          d.error.message);
        }
    }
}

TEST_CASE("Length field: varint_leb128") {
    for (const VarintVector& v : kLeb128) {
        CAPTURE(v.value);
        if (v.value > static_cast<std::uint64_t>(INT64_MAX) + 3) continue;
        const Framer f = varint_for(LengthEncoding::varint_leb128, v.value);
        std::string out;
        REQUIRE(!encode(f, "abc", out));
        CHECK(out == v.bytes + "abc");
        check_all_splits(f, v.bytes + "abc", std::vector<std::string>{"abc"});
    }
    const Framer f = Framer::length_prefixed(0, LengthEncoding::varint_leb128);
    check_all_splits(f, encode_all(f, kSamples), kSamples);
    // Redundant high groups: 83 00 = 3.
    const Decoded d = decode_pieces(f, {bytes({0x83, 0x00}) + "xyz"});
    REQUIRE(!d.error);
    CHECK(messages_of(d) == std::vector<std::string>{"xyz"});
}

TEST_CASE("Length field: varints too long or over 64 bits are framing errors") {
    struct Case {
        LengthEncoding enc;
        std::string bytes;
        std::string_view why;
    };
    const std::vector<Case> cases = {
        {LengthEncoding::varint_be128,
         bytes({0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x03}), "longer"},
        {LengthEncoding::varint_be128,
         bytes({0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), "overflows"},
        {LengthEncoding::varint_leb128,
         bytes({0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), "longer"},
        {LengthEncoding::varint_leb128,
         bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}), "overflows"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.why);
        const Framer f = Framer::length_prefixed(0, c.enc);
        for (std::size_t split = 0; split <= c.bytes.size(); ++split) {
            const Decoded d = decode_pieces(f, {std::string_view(c.bytes).substr(0, split),
                                                std::string_view(c.bytes).substr(split)});
            REQUIRE(d.error);
            CHECK(d.error == errc::framing_error);
            CHECK_MESSAGE(mentions(d.error, c.why), d.error.message);
            CHECK(d.max_buffered <= 10);
        }
    }
}

TEST_CASE("Length field: adjustment, offset and strip (the Netty examples)") {
    SUBCASE("length counts the whole frame: adjustment -2, header kept") {
        Framer f = Framer::length_prefixed(2);
        f.length.adjustment = -2;
        f.length.strip_header = false;
        const std::string frame = bytes({0x00, 0x0e}) + "HELLO, WORLD";
        const Decoded d = decode_pieces(f, {frame + frame});
        REQUIRE(!d.error);
        REQUIRE(d.frames.size() == 2);
        CHECK(d.frames[0].message == frame);
        CHECK(d.frames[0].payload == "HELLO, WORLD");
        CHECK(d.frames[0].frame == frame);
        std::string out;
        REQUIRE(!encode(f, "HELLO, WORLD", out));
        CHECK(out == frame);
        check_all_splits(f, frame + frame, {frame, frame});
    }
    SUBCASE("offset 2: a 2-byte header before a 3-byte field") {
        Framer f = Framer::length_prefixed(3);
        f.length.offset = 2;
        const std::string frame = bytes({0xca, 0xfe, 0x00, 0x00, 0x0c}) + "HELLO, WORLD";
        f.length.strip_header = true;
        CHECK(f.validate(Transport::tcp) == errc::invalid_config);  // 3 is no valid width
        f.length.width = 4;
        const std::string frame4 = bytes({0xca, 0xfe, 0x00, 0x00, 0x00, 0x0c}) + "HELLO, WORLD";
        check_all_splits(f, frame4 + frame4, {"HELLO, WORLD", "HELLO, WORLD"});
        f.length.strip_header = false;
        check_all_splits(f, frame4 + frame4, {frame4, frame4});
        // encode takes the bytes before the field as the payload's first `offset` bytes.
        std::string out;
        REQUIRE(!encode(f,
                        "\xca\xfe"
                        "HELLO, WORLD",
                        out));
        CHECK(out == frame4);
        out.clear();
        CHECK(encode(f, "\xca", out) == errc::invalid_config);
        CHECK(out.empty());
    }
    SUBCASE("positive adjustment: a 2-byte header after the field, not counted by it") {
        Framer f = Framer::length_prefixed(2);
        f.length.adjustment = 2;
        const std::string frame = bytes({0x00, 0x0c, 0xca, 0xfe}) + "HELLO, WORLD";
        const std::string body = bytes({0xca, 0xfe}) + "HELLO, WORLD";
        check_all_splits(f, frame + frame, {body, body});
        std::string out;
        REQUIRE(!encode(f, body, out));
        CHECK(out == frame);
        out.clear();
        CHECK(encode(f, "x", out) == errc::invalid_config);  // shorter than the adjustment
        CHECK(out.empty());
    }
    SUBCASE("offset, varint and adjustment together") {
        Framer f = Framer::length_prefixed(0, LengthEncoding::varint_be128);
        f.length.offset = 3;
        f.length.adjustment = -1;
        std::vector<std::string> payloads;
        for (const std::string& s : kSamples) payloads.push_back("ABC" + s);
        const std::string stream = encode_all(f, payloads);
        std::vector<std::string> expected;
        for (const std::string& s : kSamples) expected.push_back(s);
        check_all_splits(f, stream, expected);
        f.length.strip_header = false;
        const Decoded d = decode_pieces(f, {stream});
        REQUIRE(d.frames.size() == kSamples.size());
        CHECK(d.frames[0].message.substr(0, 3) == "ABC");
        CHECK(d.frames[0].message.substr(3, 1) == bytes({6}));  // 5 + 1
        CHECK(d.frames[0].payload == "hello");
    }
    SUBCASE("a value below -adjustment is a framing error") {
        Framer f = Framer::length_prefixed(2);
        f.length.adjustment = -2;
        const Decoded d = decode_pieces(f, {bytes({0x00, 0x01, 'x'})});
        REQUIRE(d.error);
        CHECK(d.error == errc::framing_error);
        CHECK(mentions(d.error, "negative"));
    }
}

TEST_CASE("Length field: maximum-size messages pass, one byte more is refused") {
    for (LengthEncoding enc : {LengthEncoding::big_endian, LengthEncoding::little_endian,
                               LengthEncoding::varint_leb128, LengthEncoding::varint_be128}) {
        CAPTURE(std::string(to_string(enc)));
        Framer f = Framer::length_prefixed(4, enc);
        f.max_message = 1000;
        const std::string max(1000, 'm');
        std::string stream;
        REQUIRE(!encode(f, max, stream));
        std::string tmp;
        CHECK(encode(f, max + "+", tmp) == errc::message_too_large);
        CHECK(tmp.empty());
        Decoded d = decode_pieces(f, {stream.substr(0, 500), stream.substr(500)});
        REQUIRE(!d.error);
        REQUIRE(d.frames.size() == 1);
        CHECK(d.frames[0].message == max);
        // One byte over: the declared length alone is the error, nothing of the body is kept.
        Framer big = f;
        big.max_message = 1001;
        std::string over;
        REQUIRE(!encode(big, max + "+", over));
        d = decode_pieces(f, {over.substr(0, 1), over.substr(1, 600), over.substr(601)});
        REQUIRE(d.error);
        CHECK(d.error == errc::framing_error);
        CHECK_MESSAGE(mentions(d.error, "max_message (1000)"), d.error.message);
        CHECK(d.max_buffered < 8);
    }
}

TEST_CASE("Length field: a huge declared length is refused before anything is allocated") {
    FrameDecoder d(Framer::message());
    int n = 0;
    const std::string header = bytes({0xff, 0xff, 0xff, 0xff});
    CHECK(!d.feed(header.substr(0, 3), [&](const Frame&) { ++n; }));
    CHECK(d.buffered() == 3);
    CHECK(d.heap_capacity() == 0);
    const Error e = d.feed(header.substr(3) + "body", [&](const Frame&) { ++n; });
    REQUIRE(e);
    CHECK(e == errc::framing_error);
    CHECK(mentions(e, "4294967295"));
    CHECK(d.buffered() == 0);
    CHECK(d.heap_capacity() == 0);
    CHECK(n == 0);
    // The error is final for the stream, until reset().
    CHECK(d.feed(std::string(4, '\0'), [&](const Frame&) { ++n; }) == errc::framing_error);
    CHECK(n == 0);
    d.reset();
    CHECK(!d.feed(std::string(4, '\0'), [&](const Frame&) { ++n; }));
    CHECK(n == 1);
    // 8-byte fields and positive adjustments near 2^64 are checked without overflow.
    Framer f = Framer::length_prefixed(8);
    f.length.adjustment = 5;
    const Decoded dd = decode_pieces(f, {std::string(8, '\xff')});
    REQUIRE(dd.error);
    CHECK(dd.error == errc::framing_error);
}

TEST_CASE("Length field: a frame split across reads is copied once; the carry empties to nothing") {
    const Framer f = Framer::message();
    const std::string body(5000, 'b');
    std::string stream;
    REQUIRE(!encode(f, body, stream));
    REQUIRE(!encode(f, "tail", stream));
    FrameDecoder d(f);
    std::vector<std::string> got;
    auto take = [&](const Frame& fr) { got.emplace_back(fr.message); };
    CHECK(!d.feed(std::string_view(stream).substr(0, 1000), take));
    CHECK(d.buffered() == 1000);
    // One block for the frame's size (known from its header), rounded to a power of two.
    CHECK(d.heap_capacity() == 8192);
    CHECK(!d.feed(std::string_view(stream).substr(1000, 4004 + 2), take));
    CHECK(got.size() == 1);
    CHECK(d.buffered() == 2);
    CHECK(d.heap_capacity() == 8192);  // still in use: kept for the next tail
    CHECK(!d.feed(std::string_view(stream).substr(5006), take));
    CHECK(got == std::vector<std::string>{body, "tail"});
    CHECK(d.buffered() == 0);
    CHECK(d.heap_capacity() == 0);
}

// ---------------------------------------------------------------- delimiter

TEST_CASE("Delimiter: lines, stripped and kept") {
    const std::vector<std::string> lines = {"one", "", "two words", std::string(300, 'l'), ""};
    std::string stream;
    for (const std::string& l : lines) stream += l + "\n";
    CHECK(encode_all(Framer::lines(), lines) == stream);
    check_all_splits(Framer::lines(), stream, lines);
    std::vector<std::string> kept;
    for (const std::string& l : lines) kept.push_back(l + "\n");
    check_all_splits(Framer::delimited("\n", false), stream, kept);
    const Decoded d = decode_pieces(Framer::delimited("\n", false), {stream});
    REQUIRE(d.frames.size() == lines.size());
    CHECK(d.frames[0].payload == "one");
    CHECK(d.frames[0].frame == "one\n");
}

TEST_CASE("Delimiter: \"\\r\\n\" split across feeds") {
    const Framer f = Framer::delimited("\r\n");
    const std::string stream = "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\rwith\nloose\r\r\n";
    const std::vector<std::string> expected = {"GET / HTTP/1.1", "Host: x", "",
                                               "body\rwith\nloose\r"};
    check_all_splits(f, stream, expected);
    // The two bytes of one delimiter in two feeds.
    const Decoded d = decode_pieces(f, {"abc\r", "\ndef\r", "\n"});
    REQUIRE(!d.error);
    CHECK(messages_of(d) == std::vector<std::string>{"abc", "def"});
    // Kept, the delimiter arrives whole in the message.
    const Decoded k = decode_pieces(Framer::delimited("\r\n", false), {"abc\r", "\n"});
    CHECK(messages_of(k) == std::vector<std::string>{"abc\r\n"});
}

TEST_CASE("Delimiter: long and self-overlapping delimiters") {
    for (std::string_view delim : {"abab"sv, "aab"sv, "12345678"sv, "\0\0"sv, "xyxyxyxz"sv}) {
        CAPTURE(delim);
        const Framer f = Framer::delimited(delim);
        // Messages made of the delimiter's own bytes, minus the whole delimiter.
        const std::vector<std::string> msgs = {std::string(delim.substr(0, delim.size() - 1)),
                                               std::string(delim.substr(1)), "",
                                               std::string(delim.substr(0, 1)) + "q", "plain"};
        std::string stream;
        std::vector<std::string> valid;  // those the delimiter does not end early
        for (const std::string& m : msgs) {
            std::string out;
            const bool ok = (m + std::string(delim)).find(delim) == m.size();
            CHECK(!encode(f, m, out) == ok);
            if (!ok) continue;
            valid.push_back(m);
            stream += out;
        }
        CHECK(valid.size() >= 3);
        check_all_splits(f, stream, valid);
    }
}

TEST_CASE("Delimiter: no delimiter within max_message is a framing error") {
    Framer f = Framer::delimited("\r\n");
    f.max_message = 10;
    // Exactly max_message bytes, then the delimiter: fine, in any split.
    check_all_splits(f, "0123456789\r\n", {"0123456789"});
    // Eleven bytes: refused once it is certain, in one feed or byte by byte.
    const std::string over = "0123456789A\r\n";
    Decoded d = decode_pieces(f, {over});
    REQUIRE(d.error);
    CHECK(d.error == errc::framing_error);
    CHECK(mentions(d.error, "max_message (10)"));
    std::vector<std::string_view> one_by_one;
    for (std::size_t i = 0; i < over.size(); ++i)
        one_by_one.push_back(std::string_view(over).substr(i, 1));
    d = decode_pieces(f, one_by_one);
    REQUIRE(d.error);
    CHECK(d.max_buffered <= 11);
    // Ten bytes and a lone '\r' could still end well: kept, not refused.
    FrameDecoder dec(f);
    CHECK(!dec.feed("0123456789\r", [](const Frame&) {}));
    CHECK(dec.buffered() == 11);
    // A stream that never sends the delimiter.
    FrameDecoder endless(Framer::lines());
    Error e;
    const std::string chunk(64 * 1024, 'z');
    std::size_t fed = 0;
    while (!e && fed < 20u * 1024 * 1024) {
        e = endless.feed(chunk, [](const Frame&) {});
        fed += chunk.size();
    }
    REQUIRE(e);
    CHECK(e == errc::framing_error);
    CHECK(mentions(e, "no delimiter"));
    CHECK(fed <= 17u * 1024 * 1024);
    CHECK(endless.heap_capacity() == 0);
}

TEST_CASE("Delimiter: encode refuses a payload containing the delimiter") {
    std::string out = "kept";
    CHECK(encode(Framer::lines(), "two\nlines", out) == errc::invalid_config);
    CHECK(out == "kept");
    // A payload that the delimiter's own bytes would end early: with "aa", "a" + "aa".
    CHECK(encode(Framer::delimited("aa"), "a", out) == errc::invalid_config);
    CHECK(encode(Framer::delimited("abab"), "xab", out) == errc::invalid_config);
    CHECK(!encode(Framer::delimited("abab"), "xa", out));  // "xa" + "abab": ends where it should
    out = "kept";
    Framer f = Framer::lines();
    f.max_message = 3;
    CHECK(encode(f, "four", out) == errc::message_too_large);
    CHECK(!encode(f, "abc", out));
    CHECK(out == "keptabc\n");
}

// ---------------------------------------------------------------- fixed size

TEST_CASE("Fixed size") {
    const Framer f = Framer::fixed(5);
    const std::vector<std::string> msgs = {"aaaaa", "\0\0\0\0\0"s, "hello", "12345"};
    const std::string stream = encode_all(f, msgs);
    CHECK(stream.size() == 20);
    check_all_splits(f, stream, msgs);
    std::string out;
    CHECK(encode(f, "four", out) == errc::invalid_config);
    CHECK(encode(f, "sixsix", out) == errc::invalid_config);
    CHECK(out.empty());
    // One byte: every byte is a message.
    check_all_splits(Framer::fixed(1), "abc", {"a", "b", "c"});
    // The largest allowed size.
    Framer big = Framer::fixed(1000);
    big.max_message = 1000;
    const std::string m(1000, 'F');
    check_all_splits(big, m + m, {m, m});
    // A partial message is kept, no more.
    FrameDecoder d(f);
    CHECK(!d.feed("abc", [](const Frame&) {}));
    CHECK(d.buffered() == 3);
}

// ---------------------------------------------------------------- JSON header

namespace {

// Bytes the tutorial's Python client sends (json.dumps(..., ensure_ascii=False), struct ">H"),
// on a little-endian machine:
//   {"byteorder", "content-type": "text/json", "content-encoding": "utf-8"} with the request
//   json.dumps({"action": "search", "value": "ring"}) as content;
constexpr std::string_view kPyText =
    "\x00g{\"byteorder\": \"little\", \"content-type\": \"text/json\", \"content-encoding\": "
    "\"utf-8\", \"content-length\": 37}{\"action\": \"search\", \"value\": \"ring\"}"sv;
//   binary content with the tutorial's binary type;
constexpr std::string_view kPyBinary =
    "\x00~{\"byteorder\": \"little\", \"content-type\": \"binary/custom-client-binary-type\", "
    "\"content-encoding\": \"binary\", \"content-length\": 9}\x00\x01"
    "binary\xff"sv;
//   a content type that needs escaping (quote, backslash, tab, U+0001, DEL, é € U+1F600) and
//   empty content.
constexpr std::string_view kPyEscaped =
    "\x00{{\"byteorder\": \"little\", \"content-type\": \"text/\\\"q\\\"\\\\\\t\\u0001\x7f\xc3\xa9"
    "\xe2\x82\xac\xf0\x9f\x98\x80\", \"content-encoding\": \"utf-8\", \"content-length\": 0}"sv;

struct JsonGot {
    std::string byteorder, type, encoding, text, content;
    std::uint64_t length = 0;
    std::string extra;  // the "extra" key, when present
};

std::vector<JsonGot> decode_json(const Framer& f, const std::vector<std::string_view>& pieces,
                                 Error* error = nullptr) {
    FrameDecoder d(f);
    std::vector<JsonGot> got;
    std::string read_buffer;
    for (std::string_view piece : pieces) {
        read_buffer.assign(piece);
        Error e = d.feed(read_buffer, [&](const Frame& fr) {
            REQUIRE(fr.json_header != nullptr);
            REQUIRE(fr.json != nullptr);
            const JsonMessageHeader& h = *fr.json_header;
            JsonGot g{std::string(h.byteorder),
                      std::string(h.content_type),
                      std::string(h.content_encoding),
                      std::string(h.text),
                      std::string(fr.message),
                      h.content_length,
                      ""};
            if (fr.json->contains("extra")) g.extra = fr.json->at("extra").dump();
            CHECK(fr.payload == fr.message);
            CHECK(fr.frame.size() == 2 + h.text.size() + h.content_length);
            got.push_back(g);
        });
        read_buffer.assign(read_buffer.size(), '\xAA');
        if (e) {
            if (error) *error = e;
            break;
        }
    }
    return got;
}

}  // namespace

TEST_CASE("JSON header: decodes what the Python tutorial sends") {
    const std::string stream =
        std::string(kPyText) + std::string(kPyBinary) + std::string(kPyEscaped);
    const std::vector<JsonGot> whole = decode_json(Framer::json_header(), {stream});
    REQUIRE(whole.size() == 3);
    CHECK(whole[0].byteorder == "little");
    CHECK(whole[0].type == "text/json");
    CHECK(whole[0].encoding == "utf-8");
    CHECK(whole[0].length == 37);
    CHECK(whole[0].content == R"({"action": "search", "value": "ring"})");
    CHECK(whole[0].text.front() == '{');
    CHECK(whole[0].text.size() == 0x67);
    CHECK(whole[1].type == "binary/custom-client-binary-type");
    CHECK(whole[1].encoding == "binary");
    CHECK(whole[1].content ==
          "\x00\x01"
          "binary\xff"s);
    CHECK(whole[2].type == "text/\"q\"\\\t\x01\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    CHECK(whole[2].content.empty());
    // The same at every split point and byte by byte.
    for (std::size_t split = 0; split <= stream.size(); ++split) {
        CAPTURE(split);
        const std::vector<JsonGot> two = decode_json(
            Framer::json_header(),
            {std::string_view(stream).substr(0, split), std::string_view(stream).substr(split)});
        REQUIRE(two.size() == 3);
        CHECK(two[0].content == whole[0].content);
        CHECK(two[1].content == whole[1].content);
        CHECK(two[2].type == whole[2].type);
    }
    std::vector<std::string_view> bytes1;
    for (std::size_t i = 0; i < stream.size(); ++i)
        bytes1.push_back(std::string_view(stream).substr(i, 1));
    const std::vector<JsonGot> slow = decode_json(Framer::json_header(), bytes1);
    REQUIRE(slow.size() == 3);
    CHECK(slow[1].content == whole[1].content);
}

TEST_CASE("JSON header: encode is byte for byte what Python sends") {
    const Framer f = Framer::json_header();
    std::string out;
    REQUIRE(!encode_json_message(f, R"({"action": "search", "value": "ring"})", "text/json",
                                 "utf-8", out));
    REQUIRE(!encode(f,
                    "\x00\x01"
                    "binary\xff"sv,
                    out));  // encode() gives the tutorial's binary type
    REQUIRE(!encode_json_message(
        f, "", "text/\"q\"\\\t\x01\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "utf-8", out));
    const std::string python =
        std::string(kPyText) + std::string(kPyBinary) + std::string(kPyEscaped);
    if constexpr (std::endian::native == std::endian::little) {
        CHECK(out == python);
    } else {
        MESSAGE("big-endian host: byteorder is \"big\", so the bytes differ from the vector");
    }
    // Round trip: decode, re-encode from the decoded fields, compare.
    const std::vector<JsonGot> got = decode_json(f, {python});
    REQUIRE(got.size() == 3);
    std::string again;
    for (const JsonGot& g : got)
        REQUIRE(!encode_json_message(f, g.content, g.type, g.encoding, again));
    if constexpr (std::endian::native == std::endian::little) CHECK(again == python);
}

TEST_CASE("JSON header: other keys, duplicates and the limits") {
    auto message = [](std::string_view header, std::string_view content) {
        std::string m;
        m.push_back(static_cast<char>(header.size() >> 8));
        m.push_back(static_cast<char>(header.size() & 0xff));
        m += header;
        m += content;
        return m;
    };
    const std::string h =
        R"({"byteorder": "big", "content-type": "t", "content-encoding": "e", "content-length": 3, "extra": [1, {"k": null}]})";
    Error e;
    std::vector<JsonGot> got = decode_json(Framer::json_header(), {message(h, "abc")}, &e);
    REQUIRE(!e);
    REQUIRE(got.size() == 1);
    CHECK(got[0].byteorder == "big");
    CHECK(got[0].extra == R"([1,{"k":null}])");
    // "-0" is 0 to Python's json, so it is to the decoder.
    const std::string minus_zero =
        R"({"byteorder": "big", "content-type": "t", "content-encoding": "e", "content-length": -0})";
    got = decode_json(Framer::json_header(), {message(minus_zero, "")}, &e);
    CHECK(!e);
    REQUIRE(got.size() == 1);
    CHECK(got[0].length == 0);
    // Header exactly at max_header, and one byte over.
    Framer f = Framer::json_header();
    f.json.max_header = h.size();
    got = decode_json(f, {message(h, "abc")}, &e);
    CHECK(!e);
    CHECK(got.size() == 1);
    f.json.max_header = h.size() - 1;
    got = decode_json(f, {message(h, "abc")}, &e);
    REQUIRE(e);
    CHECK(e == errc::framing_error);
    CHECK(mentions(e, "max_header"));
    // Content exactly at max_message, and one byte over (refused from the header alone).
    f = Framer::json_header();
    f.max_message = 3;
    e = {};
    got = decode_json(f, {message(h, "abc")}, &e);
    CHECK(!e);
    CHECK(got.size() == 1);
    f.max_message = 2;
    got = decode_json(f, {message(h, "")}, &e);
    REQUIRE(e);
    CHECK(mentions(e, "max_message"));
    // The encoder's limits.
    std::string out;
    CHECK(encode_json_message(f, "abc", "t", "e", out) == errc::message_too_large);
    Framer small = Framer::json_header();
    small.json.max_header = 50;
    CHECK(encode_json_message(small, "abc", "text/json", "utf-8", out) == errc::message_too_large);
    CHECK(encode_json_message(Framer::json_header(), "abc", std::string(70000, 't'), "e", out) ==
          errc::message_too_large);
    CHECK(encode_json_message(Framer::json_header(), "abc", "\xff", "e", out) ==
          errc::invalid_config);
    CHECK(encode_json_message(Framer::message(), "abc", "t", "e", out) == errc::invalid_config);
    CHECK(out.empty());
}

TEST_CASE("JSON header: bad headers are framing errors") {
    auto message = [](std::string_view header) {
        std::string m;
        m.push_back(static_cast<char>(header.size() >> 8));
        m.push_back(static_cast<char>(header.size() & 0xff));
        m += header;
        return m + "content";
    };
    const std::vector<std::pair<std::string, std::string_view>> cases = {
        {message(R"({"content-length": 1)"), "not valid JSON"},
        {message("[1, 2]"), "array"},
        {message("\"text\""), "string"},
        {message(""), "not valid JSON"},
        {message("\xef\xbb\xbf{}"), "byte order mark"},
        {message(R"({"content-length": "7"})"), "content-length is a string"},
        {message(R"({"content-length": -1, "byteorder": "little"})"), "negative"},
        {message(R"({"content-length": 7.0})"), "non-integer"},
        {message(R"({"content-length": 1e30})"), "non-integer"},
        {message(R"({"content-length": 99999999999999999999999})"), "non-integer"},
        {message(R"({"byteorder": "little"})"), "no content-length"},
        {message(R"({"content-length": 7, "content-type": "a", "content-encoding": "b"})"),
         "no byteorder"},
        {message(
             R"({"content-length": 7, "byteorder": "little", "content-type": 1, "content-encoding": "b"})"),
         "content-type is a number"},
        {message(R"({"content-length": 7, "byteorder": "little", "content-type": "a"})"),
         "no content-encoding"},
        {message("{\"content-length\": 7, \"byteorder\": \"\xff\"}"), "not valid JSON"},
        {message(R"({"content-length": 7} trailing)"), "not valid JSON"},
    };
    for (const auto& c : cases) {
        const std::string& bytes_ = c.first;
        const std::string_view why = c.second;
        CAPTURE(why);
        Error e;
        const std::vector<JsonGot> got = decode_json(Framer::json_header(), {bytes_}, &e);
        CHECK(got.empty());
        REQUIRE(e);
        CHECK(e == errc::framing_error);
        CHECK_MESSAGE(mentions(e, why), e.message);
    }
}

// ---------------------------------------------------------------- pause, UDP, garbage

TEST_CASE("A callback returning false pauses; the decoder keeps the rest") {
    for (const Framer& f : {Framer::message(), Framer::lines(), Framer::fixed(5)}) {
        CAPTURE(std::string(to_string(f.kind)));
        const std::vector<std::string> msgs = {"aaaaa", "bbbbb", "ccccc", "ddddd"};
        const std::string stream = encode_all(f, msgs);
        FrameDecoder d(f);
        std::vector<std::string> got;
        std::string read_buffer = stream.substr(0, stream.size() - 2);
        // Take one message per call.
        auto one = [&](const Frame& fr) {
            got.emplace_back(fr.message);
            return false;
        };
        CHECK(!d.feed(read_buffer, one));
        read_buffer.assign(read_buffer.size(), '\xAA');  // the read buffer is reused
        CHECK(got.size() == 1);
        CHECK(d.buffered() == stream.size() - 2 - (stream.size() / 4));
        CHECK(!d.feed({}, one));
        CHECK(!d.feed({}, one));
        CHECK(got.size() == 3);
        CHECK(!d.feed({}, one));  // the last one is incomplete
        CHECK(got.size() == 3);
        CHECK(!d.feed(std::string_view(stream).substr(stream.size() - 2), one));
        CHECK(got == msgs);
        CHECK(d.buffered() == 0);
        CHECK(d.heap_capacity() == 0);
    }
}

TEST_CASE("What a pause kept is held to the same limits") {
    // Found by fuzzing: a pause kept bytes with no delimiter past max_message; resuming must
    // refuse them, as one feed of the same bytes does.
    Framer f = Framer::delimited(std::string_view("\0", 1));
    f.max_message = 1;
    FrameDecoder d(f);
    int n = 0;
    const std::string stream =
        "\0\0\x10\x01"
        "aaab"s;
    CHECK(!d.feed(stream, [&](const Frame&) { return ++n == 0; }));
    CHECK(n == 1);
    CHECK(!d.feed({}, [&](const Frame&) { return ++n == 0; }));
    CHECK(n == 2);
    const Error e = d.feed({}, [&](const Frame&) { return ++n == 0; });
    CHECK(e == errc::framing_error);
    CHECK(n == 2);
    CHECK(decode_pieces(f, {stream}).error == errc::framing_error);
    // A length field kept by a pause is checked when it is parsed.
    FrameDecoder l(Framer::message());
    const std::string two = bytes({0, 0, 0, 1, 'x', 0x7f, 0xff, 0xff, 0xff});
    CHECK(!l.feed(two, [&](const Frame&) { return false; }));
    CHECK(l.buffered() == 4);
    CHECK(l.feed({}, [&](const Frame&) { return false; }) == errc::framing_error);
}

TEST_CASE("UDP: a datagram is one message; a length field must match it") {
    FrameDecoder raw(Framer::raw(), FrameInput::datagrams);
    int n = 0;
    CHECK(!raw.feed({}, [&](const Frame& f) {
        ++n;
        CHECK(f.message.empty());
    }));
    CHECK(n == 1);
    FrameDecoder d(Framer::message(), FrameInput::datagrams);
    std::vector<std::string> got;
    auto take = [&](const Frame& f) { got.emplace_back(f.message); };
    std::string dgram;
    REQUIRE(!encode(Framer::message(), "ping", dgram));
    CHECK(!d.feed(dgram, take));
    Error e = d.feed(dgram.substr(0, 6), take);
    CHECK(e == errc::framing_error);
    CHECK(mentions(e, "shorter"));
    e = d.feed(dgram + "x", take);
    CHECK(e == errc::framing_error);
    CHECK(mentions(e, "does not match"));
    e = d.feed("\x00\x00", take);
    CHECK(e == errc::framing_error);
    // An error concerns that datagram only.
    CHECK(!d.feed(dgram, take));
    CHECK(got == std::vector<std::string>{"ping", "ping"});
    CHECK(d.buffered() == 0);
}

TEST_CASE("Garbage input: no crash, bounded memory, a clear error or frames") {
    std::mt19937 rng(12345);
    std::vector<Framer> framers = {Framer::message(),
                                   Framer::lines(),
                                   Framer::delimited("\r\n"),
                                   Framer::fixed(7),
                                   Framer::json_header(),
                                   Framer::length_prefixed(0, LengthEncoding::varint_be128),
                                   Framer::length_prefixed(0, LengthEncoding::varint_leb128),
                                   Framer::length_prefixed(2, LengthEncoding::little_endian)};
    for (Framer& f : framers) f.max_message = 4096;
    for (const Framer& f : framers) {
        CAPTURE(std::string(to_string(f.kind)));
        int errors = 0;
        for (int round = 0; round < 200; ++round) {
            std::string junk(1 + rng() % 3000, '\0');
            for (char& c : junk) c = static_cast<char>(rng());
            if (round % 3 == 0) {  // plausible: a short header, JSON-ish
                junk[0] = '\0';
                junk[1] = static_cast<char>(rng() % 200);
                junk[2] = '{';
            }
            FrameDecoder d(f);
            std::size_t pos = 0;
            Error e;
            while (pos < junk.size() && !e) {
                const std::size_t n = 1 + rng() % 300;
                e = d.feed(std::string_view(junk).substr(pos, n), [&](const Frame& fr) {
                    CHECK(fr.payload.size() <= 4096);
                    CHECK(fr.frame.size() >= fr.payload.size());
                });
                pos += n;
                CHECK(d.buffered() <= 4096 + 64 * 1024 + 10);
            }
            if (e) {
                ++errors;
                CHECK(e == errc::framing_error);
                CHECK(!e.message.empty());
                CHECK(d.buffered() == 0);
            }
        }
        if (f.kind == FramerKind::json_header) CHECK(errors > 50);  // the plausible third
    }
}

TEST_CASE("length fields of 4 and 8 bytes carry every byte of the value, in either order") {
    // A negative adjustment puts a large value in the field for a small body: the field holds
    // body - adjustment.
    struct Case {
        unsigned width;
        std::int64_t adjustment;
        std::size_t body;
        std::string big;  // the field, most significant byte first
    };
    const std::vector<Case> cases = {
        {4, -0x01020000, 0x0304, bytes({1, 2, 3, 4})},
        {8, -0x0102030405060000, 0x0708, bytes({1, 2, 3, 4, 5, 6, 7, 8})},
    };
    for (const Case& c : cases) {
        for (LengthEncoding enc : {LengthEncoding::big_endian, LengthEncoding::little_endian}) {
            CAPTURE(c.width);
            CAPTURE(std::string(to_string(enc)));
            Framer f = Framer::length_prefixed(c.width, enc);
            f.length.adjustment = c.adjustment;
            REQUIRE(!f.validate(Transport::tcp));
            const std::string body(c.body, 'v');
            std::string out;
            REQUIRE(!encode(f, body, out));
            const std::string field(c.big.rbegin(), c.big.rend());
            CHECK(out.substr(0, c.width) == (enc == LengthEncoding::big_endian ? c.big : field));
            const Decoded d = decode_pieces(f, {std::string_view(out).substr(0, c.width - 1),
                                                std::string_view(out).substr(c.width - 1)});
            REQUIRE(d.frames.size() == 1);
            CHECK(d.frames[0].message == body);
        }
    }
}
