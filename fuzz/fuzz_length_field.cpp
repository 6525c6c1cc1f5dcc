// Fuzzes the length-field decoder. The first four bytes pick the configuration, so every
// encoding, width, offset, adjustment and strip setting is reached:
//   byte 0: bits 0-1 encoding, bits 2-3 width (1, 2, 4, 8), bit 4 strip_header, bit 5 pause,
//           bit 6 UDP (each chunk is a datagram)
//   byte 1: bits 0-2 offset, bit 7 an extreme adjustment instead of byte 2's
//   byte 2: adjustment (signed), or an index into the extreme ones
//   byte 3: bits 0-2 max_message, bits 3-7 the chunking seed
// The rest is the stream.
#include "fuzz_decoder.hpp"

#include <array>
#include <limits>

using namespace pipeworks;
using namespace pipeworks::fuzz;

namespace {

void check_frame(const Framer& f, const Frame& fr) {
    const Framer::LengthField& lf = f.length;
    expect(fr.payload.size() <= f.max_message, "body within max_message");
    expect(fr.frame.size() >= lf.offset + fr.payload.size() + 1, "frame holds header and body");
    expect(fr.frame.data() + fr.frame.size() == fr.payload.data() + fr.payload.size(),
           "the body ends the frame");
    expect(fr.message == (lf.strip_header ? fr.payload : fr.frame), "message follows strip");
    // A fixed-width field encodes one way only: re-encoding gives the frame back.
    if (lf.encoding == LengthEncoding::big_endian || lf.encoding == LengthEncoding::little_endian) {
        std::string again;
        std::string payload(fr.frame.substr(0, lf.offset));
        payload += fr.payload;
        expect(!encode(f, payload, again), "a decoded frame encodes");
        expect(again == fr.frame, "re-encoding gives the same frame");
    } else {
        // A varint may carry redundant groups; decoding the re-encoding gives the same body.
        std::string again;
        std::string payload(fr.frame.substr(0, lf.offset));
        payload += fr.payload;
        expect(!encode(f, payload, again), "a decoded frame encodes");
        expect(again.size() <= fr.frame.size(), "the minimal varint is no longer");
        FrameDecoder d(f);
        int n = 0;
        expect(!d.feed(again,
                       [&](const Frame& g) {
                           ++n;
                           expect(g.payload == fr.payload, "round trip keeps the body");
                       }),
               "a re-encoded frame decodes");
        expect(n == 1 && d.buffered() == 0, "a re-encoded frame is one frame");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in(data, size);
    const std::uint8_t b0 = in.byte();
    const std::uint8_t b1 = in.byte();
    const std::uint8_t b2 = in.byte();
    const std::uint8_t b3 = in.byte();

    static constexpr std::array<unsigned, 4> kWidths = {1, 2, 4, 8};
    static constexpr std::array<std::int64_t, 8> kExtremes = {
        std::numeric_limits<std::int64_t>::min(),
        std::numeric_limits<std::int64_t>::max(),
        -(std::int64_t{1} << 32),
        std::int64_t{1} << 32,
        -65536,
        65535,
        -(std::int64_t{1} << 62),
        16 * 1024 * 1024};
    static constexpr std::array<std::size_t, 8> kMax = {1,   2,    16,    255,
                                                        256, 1000, 65536, 16 * 1024 * 1024};

    Framer f = Framer::length_prefixed(kWidths[(b0 >> 2) & 3], static_cast<LengthEncoding>(b0 & 3));
    f.length.strip_header = (b0 >> 4) & 1;
    const bool pause = (b0 >> 5) & 1;
    const bool udp = (b0 >> 6) & 1;
    f.length.offset = b1 & 7;
    f.length.adjustment = (b1 & 0x80) ? kExtremes[b2 & 7] : static_cast<std::int8_t>(b2);
    f.max_message = kMax[b3 & 7];
    const std::uint32_t seed = b3 >> 3;
    const std::string_view stream = in.rest();

    if (f.validate(Transport::tcp)) {
        // An invalid framer decodes nothing: the decoder reports its error.
        FrameDecoder d(f);
        bool called = false;
        expect(d.feed(stream, [&](const Frame&) { called = true; }) == errc::invalid_config,
               "an invalid framer is refused");
        expect(!called, "an invalid framer delivers nothing");
        return 0;
    }
    if (udp) {
        // Datagrams: each chunk is one; a match delivers the whole datagram as one frame.
        FrameDecoder d(f, FrameInput::datagrams);
        std::size_t pos = 0;
        std::uint32_t s = seed;
        while (pos < stream.size()) {
            s = s * 1103515245u + 12345u;
            const std::size_t n = std::min<std::size_t>(1 + (s >> 16) % 64, stream.size() - pos);
            const std::string_view dgram = stream.substr(pos, n);
            pos += n;
            int frames = 0;
            const Error e = d.feed(dgram, [&](const Frame& fr) {
                ++frames;
                check_frame(f, fr);
                expect(fr.frame == dgram, "a datagram is one whole frame");
            });
            expect(e ? frames == 0 : frames == 1, "one frame per good datagram");
            expect(d.buffered() == 0, "UDP keeps nothing");
        }
        return 0;
    }
    const std::size_t max_kept = f.length.offset + 10 + f.max_message;
    differential(f, stream, seed, pause, max_kept, check_frame);
    return 0;
}
