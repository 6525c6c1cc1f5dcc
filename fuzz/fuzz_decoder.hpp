// The driver shared by the decoder fuzz targets: decodes an input in one feed, then again in
// chunks through a reused read buffer (optionally pausing after every frame), and checks that
// both give the same frames and the same verdict. Any difference, or a sanitizer report, is a
// finding.
#pragma once

#include "message/frame_decoder.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace pipeworks::fuzz {

// Aborts (a finding) when `ok` is false.
inline void expect(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
        std::abort();
    }
}

// Takes bytes from the front of the fuzzer's input.
class Input {
public:
    Input(const std::uint8_t* data, std::size_t size)
        : rest_(reinterpret_cast<const char*>(data), size) {}
    std::uint8_t byte() {
        if (rest_.empty()) return 0;
        const auto b = static_cast<std::uint8_t>(rest_[0]);
        rest_.remove_prefix(1);
        return b;
    }
    std::string_view take(std::size_t n) {
        n = std::min(n, rest_.size());
        std::string_view s = rest_.substr(0, n);
        rest_.remove_prefix(n);
        return s;
    }
    std::string_view rest() const { return rest_; }

private:
    std::string_view rest_;
};

struct Copied {
    std::string message, payload, frame;
    bool operator==(const Copied&) const = default;
};

struct Outcome {
    std::vector<Copied> frames;
    bool failed = false;
};

// Checks made on every frame, specific to a target.
using FrameCheck = void (*)(const Framer&, const Frame&);

// One feed of the whole stream.
inline Outcome decode_whole(const Framer& framer, std::string_view stream, FrameCheck check) {
    FrameDecoder d(framer);
    Outcome out;
    const Error e = d.feed(stream, [&](const Frame& f) {
        check(framer, f);
        out.frames.push_back(
            {std::string(f.message), std::string(f.payload), std::string(f.frame)});
    });
    out.failed = static_cast<bool>(e);
    if (e) {
        expect(e == errc::framing_error, "a stream error is a framing_error");
        expect(!e.message.empty(), "an error has a message");
        expect(d.buffered() == 0, "a failed decoder keeps nothing");
    } else {
        expect(d.buffered() <= stream.size(), "kept no more than was fed");
    }
    return out;
}

// Feeds in chunks whose sizes come from `seed`; with `pause`, every callback returns false and
// the kept bytes are drained with feed({}) before the next chunk.
inline Outcome decode_chunked(const Framer& framer, std::string_view stream, std::uint32_t seed,
                              bool pause, std::size_t max_kept, FrameCheck check) {
    FrameDecoder d(framer);
    Outcome out;
    std::string read_buffer;
    auto take = [&](const Frame& f) {
        check(framer, f);
        out.frames.push_back(
            {std::string(f.message), std::string(f.payload), std::string(f.frame)});
        return !pause;
    };
    std::size_t pos = 0;
    while (pos < stream.size()) {
        seed = seed * 1103515245u + 12345u;
        const std::size_t n = std::min<std::size_t>(1 + (seed >> 16) % 23, stream.size() - pos);
        read_buffer.assign(stream.substr(pos, n));
        pos += n;
        Error e = d.feed(read_buffer, take);
        read_buffer.assign(read_buffer.size(), '\xA5');  // a view kept past feed() reads this
        while (!e && pause) {
            const std::size_t before = out.frames.size();
            e = d.feed({}, take);
            if (out.frames.size() == before) break;
        }
        if (e) {
            expect(e == errc::framing_error, "a stream error is a framing_error");
            expect(d.buffered() == 0 && d.heap_capacity() == 0, "a failed decoder keeps nothing");
            out.failed = true;
            return out;
        }
        if (!pause) expect(d.buffered() <= max_kept, "kept bytes stay within one frame");
        if (d.buffered() == 0) expect(d.heap_capacity() == 0, "an empty carry holds no heap");
    }
    return out;
}

// Decodes `stream` whole and in chunks and requires the same result.
inline void differential(const Framer& framer, std::string_view stream, std::uint32_t seed,
                         bool pause, std::size_t max_kept, FrameCheck check) {
    const Outcome whole = decode_whole(framer, stream, check);
    const Outcome chunked = decode_chunked(framer, stream, seed, pause, max_kept, check);
    expect(whole.failed == chunked.failed, "same verdict whole and in chunks");
    expect(whole.frames == chunked.frames, "same frames whole and in chunks");
}

}  // namespace pipeworks::fuzz
