#include <pipeworks/framer.hpp>

#include "message/frame_decoder.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

namespace pipeworks {
namespace {

// Largest max_message accepted: far beyond any memory, yet every sum below stays in 64 bits.
constexpr std::uint64_t kMaxMessageLimit = std::uint64_t{1} << 62;
// Most bytes a varint length field may take (ten 7-bit groups hold 64 bits).
constexpr std::size_t kMaxVarintBytes = 10;
// The JSON header's length is a 2-byte field.
constexpr std::size_t kJsonHeaderFieldMax = 65535;

Error field(const char* name, const std::string& why) {
    return Error(errc::invalid_config, std::string("Framer.") + name + ": " + why);
}

bool is_varint(LengthEncoding e) {
    return e == LengthEncoding::varint_leb128 || e == LengthEncoding::varint_be128;
}

// Largest value a fixed-width field of `width` bytes holds.
std::uint64_t field_max(unsigned width) {
    return width >= 8 ? std::numeric_limits<std::uint64_t>::max()
                      : (std::uint64_t{1} << (8 * width)) - 1;
}

// The magnitude of a negative adjustment, without overflowing on INT64_MIN.
std::uint64_t magnitude(std::int64_t v) {
    return v < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
}

// a + b, or false when the sum passes `limit`.
bool add_within(std::uint64_t a, std::uint64_t b, std::uint64_t limit, std::uint64_t& sum) {
    if (a > limit || b > limit - a) return false;
    sum = a + b;
    return true;
}

Error validate_length(const Framer& f) {
    const Framer::LengthField& lf = f.length;
    switch (lf.encoding) {
        case LengthEncoding::big_endian:
        case LengthEncoding::little_endian:
        case LengthEncoding::varint_leb128:
        case LengthEncoding::varint_be128:
            break;
        default:
            return field("length.encoding",
                         "unknown value " + std::to_string(static_cast<int>(lf.encoding)));
    }
    const bool varint = is_varint(lf.encoding);
    if (!varint && lf.width != 1 && lf.width != 2 && lf.width != 4 && lf.width != 8)
        return field("length.width", "must be 1, 2, 4 or 8");
    const std::uint64_t width = varint ? kMaxVarintBytes : lf.width;
    // The header, then the largest body, must be addressable: offset + width + max_message.
    const auto limit = static_cast<std::uint64_t>(std::numeric_limits<std::ptrdiff_t>::max());
    std::uint64_t header = 0;
    std::uint64_t frame = 0;
    if (!add_within(lf.offset, width, limit, header) ||
        !add_within(header, f.max_message, limit, frame))
        return field("length.offset", "too large: offset + length field + max_message overflows");
    const std::uint64_t adj = magnitude(lf.adjustment);
    if (lf.adjustment > 0 && adj > f.max_message)
        return field("length.adjustment", "must be <= max_message (" +
                                              std::to_string(f.max_message) +
                                              "): every frame would be too large");
    if (lf.adjustment < 0 && !varint && adj > field_max(lf.width))
        return field("length.adjustment", std::to_string(lf.adjustment) + " is below -" +
                                              std::to_string(field_max(lf.width)) +
                                              ": every length a " + std::to_string(lf.width) +
                                              "-byte field holds would be negative");
    return {};
}

// ---- JSON text exactly as Python's json.dumps(..., ensure_ascii=False) writes it ----

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF),
// which is exactly what a Python str can be encoded into.
bool valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n = 0;
        unsigned lo = 0x80;
        unsigned hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) lo = 0xa0;  // overlong
            if (c == 0xed) hi = 0x9f;  // surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) lo = 0x90;  // overlong
            if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
        } else {
            return false;
        }
        if (s.size() - i - 1 < n) return false;
        for (std::size_t k = 1; k <= n; ++k) {
            const auto t = static_cast<unsigned char>(s[i + k]);
            const unsigned min = k == 1 ? lo : 0x80;
            const unsigned max = k == 1 ? hi : 0xbf;
            if (t < min || t > max) return false;
        }
        i += n + 1;
    }
    return true;
}

// Appends `s` as a JSON string the way Python escapes it with ensure_ascii=False: quote,
// backslash and control characters escaped (\b \f \n \r \t, others as \u00xx in lower-case
// hex), everything else (DEL and all non-ASCII included) written as is.
void append_json_string(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out.push_back('"');
    std::size_t run = 0;  // start of the bytes not yet copied
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out.append(s.data() + run, i - run);
        run = i + 1;
        out.push_back('\\');
        switch (c) {
            case '"':
                out.push_back('"');
                break;
            case '\\':
                out.push_back('\\');
                break;
            case '\b':
                out.push_back('b');
                break;
            case '\f':
                out.push_back('f');
                break;
            case '\n':
                out.push_back('n');
                break;
            case '\r':
                out.push_back('r');
                break;
            case '\t':
                out.push_back('t');
                break;
            default: {
                const char esc[5] = {'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
                out.append(esc, sizeof esc);
            }
        }
    }
    out.append(s.data() + run, s.size() - run);
    out.push_back('"');
}

void append_decimal(std::string& out, std::uint64_t v) {
    char digits[20];
    std::size_t n = 0;
    do {
        digits[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n != 0) out.push_back(digits[--n]);
}

// Appends a length field holding `value`; `value` fits (checked by the caller).
void append_length(std::string& out, const Framer::LengthField& lf, std::uint64_t value) {
    // Made whole first and appended once: a push_back per byte costs a capacity check each,
    // and this runs for every framed message sent.
    char field[kMaxVarintBytes];
    std::size_t n = 0;
    const unsigned width = std::min(lf.width, 8u);  // validate() allows 1, 2, 4 or 8
    constexpr bool little = std::endian::native == std::endian::little;
    switch (lf.encoding) {
        case LengthEncoding::big_endian: {
            // value fits the field (encode_length checked): its last `width` big-endian bytes.
            const std::uint64_t be = little ? __builtin_bswap64(value) : value;
            std::memcpy(field, reinterpret_cast<const char*>(&be) + (8 - width), width);
            n = width;
            break;
        }
        case LengthEncoding::little_endian: {
            const std::uint64_t le = little ? value : __builtin_bswap64(value);
            std::memcpy(field, &le, width);
            n = width;
            break;
        }
        case LengthEncoding::varint_leb128:
            while (value >= 0x80) {
                field[n++] = static_cast<char>((value & 0x7f) | 0x80);
                value >>= 7;
            }
            field[n++] = static_cast<char>(value);
            break;
        case LengthEncoding::varint_be128: {
            unsigned groups = 1;
            while (groups < kMaxVarintBytes && (value >> (7 * groups)) != 0) ++groups;
            for (unsigned g = groups; g-- > 1;)
                field[n++] = static_cast<char>(((value >> (7 * g)) & 0x7f) | 0x80);
            field[n++] = static_cast<char>(value & 0x7f);
            break;
        }
    }
    out.append(field, n);
}

// True when the first delimiter in payload + d is the appended one: the payload holds no
// delimiter, and no tail of it is a head of d that the appended d's own first bytes complete
// (with d = "aa", "a" + "aa" would end at the first two bytes).
bool ends_at_delimiter(std::string_view payload, std::string_view d) {
    if (payload.find(d) != std::string_view::npos) return false;
    for (std::size_t k = 1; k < d.size() && k <= payload.size(); ++k) {
        if (payload.substr(payload.size() - k) == d.substr(0, k) &&
            d.substr(0, d.size() - k) == d.substr(k))
            return false;
    }
    return true;
}

Error too_large(std::size_t size, std::size_t max) {
    return Error(errc::message_too_large, "encode: a message of " + std::to_string(size) +
                                              " bytes is over Framer.max_message (" +
                                              std::to_string(max) + ")");
}

Error encode_length(const Framer& f, std::string_view payload, std::string& out) {
    const Framer::LengthField& lf = f.length;
    if (payload.size() < lf.offset)
        return Error(errc::invalid_config,
                     "encode: Framer.length.offset is " + std::to_string(lf.offset) +
                         " but the payload has " + std::to_string(payload.size()) +
                         " bytes (it must begin with the bytes before the length field)");
    const std::string_view body = payload.substr(lf.offset);
    if (body.size() > f.max_message) return too_large(body.size(), f.max_message);
    // The field holds body - adjustment, which must be >= 0 and fit the field.
    const std::uint64_t adj = magnitude(lf.adjustment);
    std::uint64_t value = body.size();
    if (lf.adjustment > 0) {
        if (value < adj)
            return Error(errc::invalid_config,
                         "encode: a body of " + std::to_string(body.size()) +
                             " bytes is shorter than Framer.length.adjustment (" +
                             std::to_string(lf.adjustment) + ")");
        value -= adj;
    } else if (lf.adjustment < 0) {
        if (value > std::numeric_limits<std::uint64_t>::max() - adj)
            return too_large(body.size(), f.max_message);
        value += adj;
    }
    if (!is_varint(lf.encoding) && value > field_max(lf.width))
        return Error(errc::message_too_large, "encode: length " + std::to_string(value) +
                                                  " does not fit a " + std::to_string(lf.width) +
                                                  "-byte length field");
    if (lf.offset != 0) out.append(payload.data(), lf.offset);  // most framers have none
    append_length(out, lf, value);
    out.append(body.data(), body.size());
    return {};
}

}  // namespace

const char* to_string(FramerKind kind) noexcept {
    switch (kind) {
        case FramerKind::raw:
            return "raw";
        case FramerKind::length_field:
            return "length_field";
        case FramerKind::delimiter:
            return "delimiter";
        case FramerKind::fixed_size:
            return "fixed_size";
        case FramerKind::json_header:
            return "json_header";
    }
    return "unknown";
}

const char* to_string(LengthEncoding encoding) noexcept {
    switch (encoding) {
        case LengthEncoding::big_endian:
            return "big_endian";
        case LengthEncoding::little_endian:
            return "little_endian";
        case LengthEncoding::varint_leb128:
            return "varint_leb128";
        case LengthEncoding::varint_be128:
            return "varint_be128";
    }
    return "unknown";
}

Error Framer::validate(Transport transport) const {
    switch (kind) {
        case FramerKind::raw:
        case FramerKind::length_field:
        case FramerKind::delimiter:
        case FramerKind::fixed_size:
        case FramerKind::json_header:
            break;
        default:
            return field("kind", "unknown value " + std::to_string(static_cast<int>(kind)));
    }
    if (transport != Transport::tcp && transport != Transport::udp)
        return Error(errc::invalid_config, "Framer: unknown transport");
    if (transport == Transport::udp && kind != FramerKind::raw && kind != FramerKind::length_field)
        return field("kind", std::string(to_string(kind)) +
                                 " framing needs a byte stream; on UDP each datagram is one "
                                 "message (use raw, or length_field to check its length)");
    if (kind == FramerKind::raw) return {};
    if (max_message == 0) return field("max_message", "must be > 0");
    if (max_message > kMaxMessageLimit)
        return field("max_message", "must be <= " + std::to_string(kMaxMessageLimit));
    switch (kind) {
        case FramerKind::length_field:
            return validate_length(*this);
        case FramerKind::delimiter:
            if (delimiter.bytes.empty() || delimiter.bytes.size() > 8)
                return field("delimiter.bytes",
                             "must be 1 to 8 bytes, got " + std::to_string(delimiter.bytes.size()));
            return {};
        case FramerKind::fixed_size:
            if (fixed_size.size == 0) return field("fixed_size.size", "must be > 0");
            if (fixed_size.size > max_message)
                return field("fixed_size.size",
                             "must be <= max_message (" + std::to_string(max_message) + ")");
            return {};
        case FramerKind::json_header:
            if (json.max_header < 2)
                return field("json.max_header", "must be >= 2 (the smallest JSON object)");
            return {};
        default:
            return {};
    }
}

Error encode(const Framer& framer, std::string_view payload, std::string& out) {
    if (Error e = framer.validate(Transport::tcp)) return e;
    return detail::encode_valid(framer, payload, out);
}

Error detail::encode_valid(const Framer& framer, std::string_view payload, std::string& out) {
    switch (framer.kind) {
        case FramerKind::raw:
            out.append(payload.data(), payload.size());
            return {};
        case FramerKind::length_field:
            return encode_length(framer, payload, out);
        case FramerKind::delimiter: {
            const std::string& d = framer.delimiter.bytes;
            if (payload.size() > framer.max_message)
                return too_large(payload.size(), framer.max_message);
            if (!ends_at_delimiter(payload, d))
                return Error(errc::invalid_config,
                             "encode: the payload contains the delimiter (or ends with a part of "
                             "it that the delimiter completes), so the receiver would split it "
                             "elsewhere");
            out.append(payload.data(), payload.size());
            out.append(d);
            return {};
        }
        case FramerKind::fixed_size:
            if (payload.size() != framer.fixed_size.size)
                return Error(errc::invalid_config, "encode: the payload has " +
                                                       std::to_string(payload.size()) +
                                                       " bytes, Framer.fixed_size.size is " +
                                                       std::to_string(framer.fixed_size.size));
            out.append(payload.data(), payload.size());
            return {};
        case FramerKind::json_header:
            return encode_json_message(framer, payload, kJsonBinaryContentType,
                                       kJsonBinaryContentEncoding, out);
    }
    return {};
}

Error encode_json_message(const Framer& framer, std::string_view content,
                          std::string_view content_type, std::string_view content_encoding,
                          std::string& out) {
    if (framer.kind != FramerKind::json_header)
        return Error(errc::invalid_config, std::string("encode_json_message: the framer is ") +
                                               to_string(framer.kind) + ", not json_header");
    if (Error e = framer.validate(Transport::tcp)) return e;
    if (content.size() > framer.max_message) return too_large(content.size(), framer.max_message);
    if (!valid_utf8(content_type))
        return Error(errc::invalid_config, "encode_json_message: content_type is not UTF-8");
    if (!valid_utf8(content_encoding))
        return Error(errc::invalid_config, "encode_json_message: content_encoding is not UTF-8");

    const std::size_t start = out.size();
    out.append(2, '\0');  // the header length, filled in below
    out.append("{\"byteorder\": ");
    append_json_string(out, std::endian::native == std::endian::little ? "little" : "big");
    out.append(", \"content-type\": ");
    append_json_string(out, content_type);
    out.append(", \"content-encoding\": ");
    append_json_string(out, content_encoding);
    out.append(", \"content-length\": ");
    append_decimal(out, content.size());
    out.push_back('}');
    const std::size_t header = out.size() - start - 2;
    const std::size_t max = std::min(framer.json.max_header, kJsonHeaderFieldMax);
    if (header > max) {
        out.resize(start);
        return Error(errc::message_too_large,
                     "encode_json_message: a JSON header of " + std::to_string(header) +
                         " bytes is over " +
                         (max == kJsonHeaderFieldMax
                              ? std::string("65535 (its 2-byte field)")
                              : "Framer.json.max_header (" + std::to_string(max) + ")"));
    }
    out[start] = static_cast<char>(header >> 8);
    out[start + 1] = static_cast<char>(header & 0xff);
    out.append(content.data(), content.size());
    return {};
}

}  // namespace pipeworks
