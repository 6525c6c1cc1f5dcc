// Heap allocations of the message layer, counted by replacing the global operator new/delete of
// this test executable: decoding small frames fed in chunks allocates nothing per message once
// warm, and encoding into a reserved buffer allocates nothing at all.
#include "../lib/message/frame_decoder.hpp"
#include "alloc_counter.hpp"
#include "support.hpp"

#include <string>
#include <vector>

using namespace pipeworks;

using pw_test::allocations;

namespace {

// A stream of `count` frames with payloads of 1 to `max_payload` bytes.
std::string small_frames(const Framer& f, int count, int max_payload) {
    std::string stream;
    std::string payload;
    for (int i = 0; i < count; ++i) {
        payload.assign(static_cast<std::size_t>(1 + i % max_payload),
                       static_cast<char>('a' + i % 26));
        REQUIRE(!encode(f, payload, stream));
    }
    return stream;
}

struct Run {
    std::size_t messages = 0;     // decoded after warm-up
    std::size_t allocations = 0;  // during them
    std::size_t feeds = 0;
};

// Feeds the stream in chunks through one reused read buffer, as a pipe does; counts
// allocations after the first `warm` chunks.
Run decode_chunked(const Framer& f, const std::string& stream, std::size_t chunk, int warm) {
    FrameDecoder d(f);
    std::string read_buffer;
    read_buffer.reserve(chunk);
    std::size_t bytes = 0;
    std::size_t messages = 0;
    auto consume = [&](const Frame& fr) {
        bytes += fr.message.size();
        ++messages;
    };
    Run run;
    std::size_t before = 0;
    std::size_t messages_before = 0;
    int n = 0;
    warm = std::min<int>(warm, static_cast<int>(stream.size() / chunk / 4));
    for (std::size_t pos = 0; pos < stream.size(); pos += chunk, ++n) {
        if (n == warm) {
            before = allocations();
            messages_before = messages;
        }
        read_buffer.assign(stream, pos, chunk);
        if (d.feed(read_buffer, consume)) {
            FAIL("framing error");
            break;
        }
        if (n >= warm) ++run.feeds;
    }
    run.allocations = allocations() - before;
    run.messages = messages - messages_before;
    CHECK(bytes > 0);
    return run;
}

}  // namespace

TEST_CASE("Counting works") {
    const std::size_t before = allocations();
    auto* p = new std::vector<int>(100);
    delete p;
    CHECK(allocations() - before == 2);
}

TEST_CASE("Steady-state decode of small frames allocates nothing per message") {
    struct Case {
        const char* name;
        Framer framer;
    };
    const std::vector<Case> cases = {
        {"message (4-byte big-endian)", Framer::message()},
        {"varint_be128", Framer::length_prefixed(0, LengthEncoding::varint_be128)},
        {"2-byte little-endian", Framer::length_prefixed(2, LengthEncoding::little_endian)},
        {"lines", Framer::lines()},
        {"\\r\\n", Framer::delimited("\r\n")},
        {"fixed 24", Framer::fixed(24)},
    };
    for (const Case& c : cases) {
        CAPTURE(std::string(c.name));
        const std::string stream = c.framer.kind == FramerKind::fixed_size
                                       ? std::string(24 * 40000, 'f')
                                       : small_frames(c.framer, 40000, 40);
        // Chunk sizes that split frames anywhere, header included.
        for (std::size_t chunk : {977u, 4096u, 65536u, 33u}) {
            CAPTURE(chunk);
            const Run run = decode_chunked(c.framer, stream, chunk, 10);
            CHECK(run.messages > 1000);
            CHECK(run.allocations == 0);
        }
    }
}

TEST_CASE("Frames larger than the inline carry allocate at most once per read, never per message") {
    const Framer f = Framer::message();
    const std::string stream = small_frames(f, 5000, 600);  // frames of 5 to 604 bytes
    const Run run = decode_chunked(f, stream, 4093, 5);
    CHECK(run.messages > 1000);
    CHECK(run.allocations <= run.feeds);
    MESSAGE("frames up to 604 bytes, 4093-byte reads: " << run.allocations << " allocations for "
                                                        << run.messages << " messages in "
                                                        << run.feeds << " reads");
}

TEST_CASE("Encoding into a reserved buffer allocates nothing") {
    const std::string payload(100, 'p');
    std::string out;
    out.reserve(4 << 20);
    for (const Framer& f :
         {Framer::raw(), Framer::message(),
          Framer::length_prefixed(0, LengthEncoding::varint_leb128),
          Framer::length_prefixed(0, LengthEncoding::varint_be128), Framer::lines(),
          Framer::delimited("\r\n"), Framer::fixed(100), Framer::json_header()}) {
        CAPTURE(std::string(to_string(f.kind)));
        out.clear();
        const std::size_t before = allocations();
        for (int i = 0; i < 5000; ++i) {
            if (encode(f, payload, out)) FAIL("encode failed");
        }
        if (f.kind == FramerKind::json_header) {
            for (int i = 0; i < 1000; ++i) {
                if (encode_json_message(f, payload, "text/json", "utf-8", out))
                    FAIL("encode_json_message failed");
            }
        }
        CHECK(allocations() - before == 0);
        CHECK(out.size() >= 5000 * 100);
    }
}
