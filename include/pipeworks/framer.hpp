// Framer: how a pipe splits the bytes it receives into messages, and how it frames what it sends.
// One Framer describes both directions. A plain value, validated on use (docs/framing.md has
// every framer, its fields and its errors). Thread-safe as a value (no shared state).
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/transport.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pipeworks {

enum class FramerKind : std::uint8_t {
    raw,           // no framing: each read (TCP) or datagram (UDP) is one message
    length_field,  // a length field says how many bytes follow it (Framer::LengthField)
    delimiter,     // every message ends with a byte sequence (Framer::Delimiter)
    fixed_size,    // every message has the same size (Framer::FixedSize)
    json_header,   // 2-byte header length, a JSON header, then the content (Framer::JsonHeader)
};

enum class LengthEncoding : std::uint8_t {
    big_endian,     // fixed width, most significant byte first (network order)
    little_endian,  // fixed width, least significant byte first
    varint_leb128,  // 7-bit groups, least significant first (LEB128, as in protobuf)
    varint_be128,   // 7-bit groups, most significant first (cs.packetstream's BSUInt)
};

PIPEWORKS_API const char* to_string(FramerKind kind) noexcept;
PIPEWORKS_API const char* to_string(LengthEncoding encoding) noexcept;

struct Framer {
    // A frame is [offset bytes][length field][value + adjustment bytes] (the body).
    struct LengthField {
        std::size_t offset = 0;  // bytes before the length field (the application's own header)
        unsigned width = 4;      // bytes of a fixed-width field: 1, 2, 4 or 8 (unused by varints)
        LengthEncoding encoding = LengthEncoding::big_endian;  // how the field is written
        std::int64_t adjustment = 0;  // added to the field's value to give the body's length
        bool strip_header = true;     // deliver the body only; false: the whole frame
    };
    // A frame is the message followed by the delimiter; the message may not contain it.
    struct Delimiter {
        std::string bytes = "\n";  // 1 to 8 bytes that end every message
        bool strip = true;         // deliver the message without the delimiter
    };
    // A frame is exactly `size` bytes.
    struct FixedSize {
        std::size_t size = 0;  // bytes of every message: 1 to max_message
    };
    // A frame is [2-byte big-endian header length][UTF-8 JSON header][content-length bytes].
    struct JsonHeader {
        std::size_t max_header = 64 * 1024;  // most bytes of the JSON header (the field caps 65535)
    };

    FramerKind kind = FramerKind::raw;           // which framing; only its sub-struct is read
    std::size_t max_message = 16 * 1024 * 1024;  // most bytes of a body, message or content
    LengthField length;                          // used when kind is length_field
    Delimiter delimiter;                         // used when kind is delimiter
    FixedSize fixed_size;                        // used when kind is fixed_size
    JsonHeader json;                             // used when kind is json_header

    // No framing (the default): what a read returns is a message.
    static Framer raw() { return {}; }
    // The default "message framing": a 4-byte big-endian length, then that many bytes.
    static Framer message() { return length_prefixed(4); }
    // A length field of `width` bytes at offset 0 counting the bytes after it (header stripped).
    // For the varint encodings `width` is unused (pass 0).
    static Framer length_prefixed(unsigned width,
                                  LengthEncoding encoding = LengthEncoding::big_endian) {
        Framer f;
        f.kind = FramerKind::length_field;
        f.length.width = width;
        f.length.encoding = encoding;
        return f;
    }
    // Text lines ending in "\n", delivered without it.
    static Framer lines() { return delimited("\n"); }
    // Messages ending with `bytes` (1 to 8 of them), delivered without them when `strip`.
    static Framer delimited(std::string_view bytes, bool strip = true) {
        Framer f;
        f.kind = FramerKind::delimiter;
        f.delimiter.bytes = std::string(bytes);
        f.delimiter.strip = strip;
        return f;
    }
    // Messages of exactly `size` bytes.
    static Framer fixed(std::size_t size) {
        Framer f;
        f.kind = FramerKind::fixed_size;
        f.fixed_size.size = size;
        return f;
    }
    // The JSON-header protocol of the "Socket Programming in Python" tutorial's application.
    static Framer json_header() {
        Framer f;
        f.kind = FramerKind::json_header;
        return f;
    }

    // Checks every field used by `kind` for a pipe of this transport. Returns an empty Error when
    // valid, otherwise one (errc::invalid_config) naming the field
    // ("Framer.length.width: must be 1, 2, 4 or 8"). On UDP a datagram is a message, so only
    // raw and length_field apply (the length field must then match the datagram's size).
    PIPEWORKS_API Error validate(Transport transport) const;
};

// The header of a message received with the json_header framer. The views are valid as long as
// the message they came with (during the callback).
struct JsonMessageHeader {
    std::string_view byteorder;     // "byteorder": the sender's sys.byteorder, "little" or "big"
    std::string_view content_type;  // "content-type", e.g. "text/json"
    std::string_view content_encoding;  // "content-encoding", e.g. "utf-8" or "binary"
    std::uint64_t content_length = 0;   // "content-length": bytes of content after the header
    std::string_view text;              // the whole JSON header as received, for any other key
};

// The content type and encoding encode() gives a json_header message (the tutorial's binary).
inline constexpr std::string_view kJsonBinaryContentType = "binary/custom-client-binary-type";
inline constexpr std::string_view kJsonBinaryContentEncoding = "binary";

// Appends `payload` framed by `framer` to `out` (a write buffer: many calls gather into one
// write). Allocates nothing when `out` has the capacity. On error `out` is left unchanged.
// - raw: the payload as is.
// - length_field: the first `length.offset` bytes of `payload` are the bytes before the field
//   (the application's header) and the rest is the body; the field is inserted between them.
//   Errors: payload shorter than the offset, or a body whose length the field cannot hold.
// - delimiter: the payload, then the delimiter; a payload containing the delimiter is refused.
// - fixed_size: the payload, which must be exactly `fixed_size.size` bytes.
// - json_header: as encode_json_message() with kJsonBinaryContentType/Encoding.
// A body over `max_message` is errc::message_too_large; an invalid framer or a payload the
// framer cannot carry is errc::invalid_config.
PIPEWORKS_API Error encode(const Framer& framer, std::string_view payload, std::string& out);

// Appends a json_header message to `out`, byte for byte what the tutorial's Python client sends:
// the header is json.dumps({"byteorder", "content-type", "content-encoding", "content-length"},
// ensure_ascii=False) in that key order, with this machine's byte order. `content_type` and
// `content_encoding` must be valid UTF-8. Errors: framer not json_header, content over
// max_message, header over json.max_header (or 65535 bytes). On error `out` is left unchanged.
PIPEWORKS_API Error encode_json_message(const Framer& framer, std::string_view content,
                                        std::string_view content_type,
                                        std::string_view content_encoding, std::string& out);

}  // namespace pipeworks
