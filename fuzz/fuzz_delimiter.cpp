// Fuzzes the delimiter decoder. The first bytes pick the configuration:
//   byte 0: bits 0-2 delimiter length - 1, bit 3 strip, bit 4 pause, bits 5-7 max_message
//   byte 1: the chunking seed
//   then the delimiter's bytes; the rest is the stream.
#include "fuzz_decoder.hpp"

#include <array>

using namespace pipeworks;
using namespace pipeworks::fuzz;

namespace {

void check_frame(const Framer& f, const Frame& fr) {
    const std::string_view d = f.delimiter.bytes;
    expect(fr.payload.size() <= f.max_message, "message within max_message");
    expect(fr.frame.size() == fr.payload.size() + d.size(), "frame = message + delimiter");
    expect(fr.frame.substr(fr.payload.size()) == d, "the frame ends with the delimiter");
    expect(fr.frame.find(d) == fr.payload.size(), "the first delimiter ends the frame");
    expect(fr.message == (f.delimiter.strip ? fr.payload : fr.frame), "message follows strip");
    std::string again;
    expect(!encode(f, fr.payload, again), "a decoded message encodes");
    expect(again == fr.frame, "re-encoding gives the same frame");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in(data, size);
    const std::uint8_t b0 = in.byte();
    const std::uint8_t b1 = in.byte();
    static constexpr std::array<std::size_t, 8> kMax = {1, 2, 3, 8, 16, 100, 1000, 1 << 20};
    const std::string_view delim = in.take((b0 & 7) + 1u);
    if (delim.empty()) return 0;
    Framer f = Framer::delimited(delim, (b0 >> 3) & 1);
    const bool pause = (b0 >> 4) & 1;
    f.max_message = kMax[(b0 >> 5) & 7];
    if (f.validate(Transport::tcp)) return 0;  // a short input gave a short delimiter: fine
    differential(f, in.rest(), b1, pause, f.max_message + delim.size() - 1, check_frame);
    return 0;
}
