// Fuzzes the JSON-header decoder. The first byte picks the configuration:
//   bit 0 pause, bits 1-2 max_header, bits 3-4 max_message, bits 5-7 the chunking seed
// The rest is the stream.
#include "fuzz_decoder.hpp"

#include <nlohmann/json.hpp>

#include <array>

using namespace pipeworks;
using namespace pipeworks::fuzz;

namespace {

void check_frame(const Framer& f, const Frame& fr) {
    expect(fr.json_header != nullptr && fr.json != nullptr, "a JSON frame has its header");
    const JsonMessageHeader& h = *fr.json_header;
    expect(fr.json->is_object(), "the header is an object");
    expect(h.text.size() <= f.json.max_header, "header within max_header");
    expect(h.content_length <= f.max_message, "content within max_message");
    expect(fr.payload.size() == h.content_length, "content-length bytes of content");
    expect(fr.message == fr.payload, "the message is the content");
    expect(fr.frame.size() == 2 + h.text.size() + fr.payload.size(),
           "frame = 2 + header + content");
    expect(static_cast<std::size_t>(static_cast<std::uint8_t>(fr.frame[0]) << 8 |
                                    static_cast<std::uint8_t>(fr.frame[1])) == h.text.size(),
           "the 2-byte field is the header's length");
    expect(fr.json->at("content-type").get_ref<const std::string&>() == h.content_type,
           "content_type is the object's");
    // Re-encoding the fields and decoding that gives the same fields and content.
    Framer big = f;
    big.json.max_header = 65535;
    std::string again;
    if (encode_json_message(big, fr.payload, h.content_type, h.content_encoding, again)) return;
    FrameDecoder d(big);
    int n = 0;
    const Error e = d.feed(again, [&](const Frame& g) {
        ++n;
        expect(g.payload == fr.payload, "round trip keeps the content");
        expect(g.json_header->content_type == h.content_type, "round trip keeps content-type");
        expect(g.json_header->content_encoding == h.content_encoding,
               "round trip keeps content-encoding");
    });
    expect(!e && n == 1, "a re-encoded message decodes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in(data, size);
    const std::uint8_t b0 = in.byte();
    static constexpr std::array<std::size_t, 4> kHeader = {2, 64, 1000, 64 * 1024};
    static constexpr std::array<std::size_t, 4> kMax = {1, 16, 1000, 16 * 1024 * 1024};
    Framer f = Framer::json_header();
    const bool pause = b0 & 1;
    f.json.max_header = kHeader[(b0 >> 1) & 3];
    f.max_message = kMax[(b0 >> 3) & 3];
    differential(f, in.rest(), b0 >> 5, pause, 2 + f.json.max_header + f.max_message, check_frame);
    return 0;
}
