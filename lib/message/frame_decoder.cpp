// Included by its own path: the test suites compile this file without lib/ on the path.
#include "frame_decoder.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <utility>

namespace pipeworks {
namespace {

constexpr std::size_t kMaxVarintBytes = 10;

Error framing(std::string message) {
    return Error(errc::framing_error, std::move(message));
}

std::string num(std::uint64_t v) {
    return std::to_string(v);
}

std::uint8_t byte_at(std::string_view s, std::size_t i) {
    return static_cast<std::uint8_t>(s[i]);
}

// A fixed-width length field as a number: one load of the field's own size (validate()
// allows 1, 2, 4 and 8 bytes), not a loop per byte, since this runs for every frame.
template <std::size_t W>
std::uint64_t load_width(const char* p, bool big) {
    std::uint64_t v = 0;
    if (big) {
        std::memcpy(reinterpret_cast<char*>(&v) + (8 - W), p, W);
        return std::endian::native == std::endian::little ? __builtin_bswap64(v) : v;
    }
    std::memcpy(&v, p, W);
    return std::endian::native == std::endian::little ? v : __builtin_bswap64(v);
}

std::uint64_t load_field(const char* p, std::size_t width, bool big) {
    switch (width) {
        case 1:
            return static_cast<unsigned char>(*p);
        case 2:
            return load_width<2>(p, big);
        case 4:
            return load_width<4>(p, big);
        case 8:
            return load_width<8>(p, big);
        default: {
            std::uint64_t value = 0;
            const auto* field = reinterpret_cast<const unsigned char*>(p);
            for (std::size_t i = 0; i < width; ++i)
                value = (value << 8) | field[big ? i : width - 1 - i];
            return value;
        }
    }
}

// Framer::validate() speaks of transports; the rules it applies to UDP are those of datagrams.
Error validate_for(const Framer& framer, FrameInput input) {
    return framer.validate(input == FrameInput::datagrams ? Transport::udp : Transport::tcp);
}

}  // namespace

// ---- CarryBuffer ----

void CarryBuffer::reallocate(std::size_t capacity) {
    auto fresh = std::make_unique_for_overwrite<char[]>(capacity);
    const std::size_t n = size();
    if (n != 0) std::memcpy(fresh.get(), base() + begin_, n);
    heap_ = std::move(fresh);
    cap_ = capacity;
    begin_ = 0;
    end_ = n;
}

void CarryBuffer::append(const char* p, std::size_t n, std::size_t expected) {
    if (n == 0) return;
    const std::size_t need = size() + n;
    if (end_ + n > cap_) {
        if (need <= cap_) {
            // Room enough once the consumed front is dropped.
            std::memmove(base(), base() + begin_, size());
            end_ -= begin_;
            begin_ = 0;
        } else {
            // Geometric growth; a frame of known size up to kEagerLimit gets its size at once
            // (one allocation per split frame), a larger one grows with what arrives.
            std::size_t cap = std::max(cap_ * 2, need);
            if (expected >= need)
                cap = expected <= kEagerLimit ? std::bit_ceil(expected) : std::min(cap, expected);
            reallocate(cap);
        }
    }
    std::memcpy(base() + end_, p, n);
    end_ += n;
}

void CarryBuffer::consume(std::size_t n) noexcept {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
}

void CarryBuffer::trim() {
    if (!heap_) return;
    const std::size_t n = size();
    if (n == 0) {
        heap_.reset();
        cap_ = kInline;
        begin_ = end_ = 0;
    } else if (cap_ > 64 * 1024 && cap_ / 4 > n) {
        reallocate(n);
    }
}

void CarryBuffer::clear() noexcept {
    heap_.reset();
    cap_ = kInline;
    begin_ = end_ = 0;
}

// ---- FrameDecoder ----

// What parse() found at the front of its input.
struct FrameDecoder::Step {
    enum Status : std::uint8_t { frame, more, bad };
    Status status = more;
    std::size_t size = 0;      // frame: the frame's length; more: the bytes needed to go on
    std::size_t body = 0;      // frame: where the body starts
    std::size_t body_len = 0;  // frame: the body's length

    static Step need(std::size_t n) { return {more, n, 0, 0}; }
    static Step whole(std::size_t n, std::size_t body, std::size_t len) {
        return {frame, n, body, len};
    }
    static Step error() { return {bad, 0, 0, 0}; }
};

FrameDecoder::FrameDecoder(const Framer& framer, FrameInput input)
    : framer_(framer), input_(input), error_(validate_for(framer, input)) {
    if (!error_ && framer_.kind == FramerKind::json_header)
        json_ = std::make_unique<nlohmann::json>();
}

FrameDecoder::~FrameDecoder() = default;
FrameDecoder::FrameDecoder(FrameDecoder&&) noexcept = default;
FrameDecoder& FrameDecoder::operator=(FrameDecoder&&) noexcept = default;

void FrameDecoder::reset() {
    carry_.clear();
    scan_from_ = 0;
    json_ready_ = false;
    error_ = validate_for(framer_, input_);
}

std::string FrameDecoder::take_buffered() {
    std::string kept(carry_.view());
    carry_.clear();
    scan_from_ = 0;
    json_ready_ = false;
    return kept;
}

void FrameDecoder::prime(std::string_view bytes) {
    if (!bytes.empty()) keep(bytes);
}

Error FrameDecoder::fail(Error err) {
    error_ = std::move(err);
    carry_.clear();
    return error_;
}

bool FrameDecoder::deliver(std::string_view frame, std::size_t body, std::size_t body_len,
                           Sink sink, void* ctx) {
    Frame f;
    f.frame = frame;
    f.payload = frame.substr(body, body_len);
    switch (framer_.kind) {
        case FramerKind::length_field:
            f.message = framer_.length.strip_header ? f.payload : frame;
            break;
        case FramerKind::delimiter:
            f.message = framer_.delimiter.strip ? f.payload : frame;
            break;
        case FramerKind::json_header:
            json_info_.text = frame.substr(2, body - 2);
            f.message = f.payload;
            f.json_header = &json_info_;
            f.json = json_.get();
            break;
        default:
            f.message = frame;
            break;
    }
    json_ready_ = false;
    return sink(ctx, f);
}

Error FrameDecoder::feed_impl(std::string_view data, Sink sink, void* ctx) {
    if (error_) return error_;
    if (input_ == FrameInput::datagrams) return feed_datagram(data, sink, ctx);
    switch (framer_.kind) {
        case FramerKind::raw:
            if (!data.empty()) deliver(data, 0, data.size(), sink, ctx);
            return {};
        case FramerKind::delimiter:
            return feed_delimited(data, sink, ctx);
        default:
            return feed_counted(data, sink, ctx);
    }
}

Error FrameDecoder::feed_datagram(std::string_view data, Sink sink, void* ctx) {
    if (framer_.kind == FramerKind::raw) {
        deliver(data, 0, data.size(), sink, ctx);
        return {};
    }
    if (framer_.kind != FramerKind::length_field)
        return framing(std::string(to_string(framer_.kind)) +
                       " framing does not apply to datagrams");
    Error err;
    const Step s = parse_length(data, err);
    if (s.status == Step::bad) return err;
    if (s.status == Step::more)
        return framing("a datagram of " + num(data.size()) +
                       " bytes is shorter than the frame its length field declares (" +
                       num(s.size) + (s.size > data.size() ? " bytes or more)" : " bytes)"));
    if (s.size != data.size())
        return framing("a datagram of " + num(data.size()) +
                       " bytes does not match its length field (a frame of " + num(s.size) +
                       " bytes)");
    deliver(data, s.body, s.body_len, sink, ctx);
    return {};
}

// Keeps what a pause left: the rest of the read, after anything already kept.
void FrameDecoder::keep(std::string_view rest) {
    carry_.append(rest.data(), rest.size(), carry_.size() + rest.size());
    scan_from_ = 0;
}

// Frames whose length is known from their first bytes: length field, fixed size, JSON header.
Error FrameDecoder::feed_counted(std::string_view data, Sink sink, void* ctx) {
    Error err;
    // First complete the frame begun in an earlier feed, taking only the bytes it needs.
    while (!carry_.empty()) {
        const Step s = parse(carry_.view(), err);
        if (s.status == Step::bad) return fail(std::move(err));
        if (s.status == Step::frame) {
            const bool go = deliver(carry_.view().substr(0, s.size), s.body, s.body_len, sink, ctx);
            carry_.consume(s.size);
            if (!go) {
                keep(data);
                carry_.trim();
                return {};
            }
            continue;
        }
        if (data.empty()) return {};
        const std::size_t take = std::min(s.size - carry_.size(), data.size());
        carry_.append(data.data(), take, s.size);
        data.remove_prefix(take);
    }
    // Then parse the rest in place; only an incomplete tail is copied.
    while (!data.empty()) {
        const Step s = parse(data, err);
        if (s.status == Step::bad) return fail(std::move(err));
        if (s.status == Step::more) {
            carry_.append(data.data(), data.size(), s.size);
            break;
        }
        const bool go = deliver(data.substr(0, s.size), s.body, s.body_len, sink, ctx);
        data.remove_prefix(s.size);
        if (!go) {
            keep(data);
            break;
        }
    }
    carry_.trim();
    return {};
}

// The end (exclusive, in `data`) of the first delimiter in carry + data that ends inside data,
// or npos. carry holds no whole delimiter.
std::size_t FrameDecoder::first_delimiter_end(std::string_view carry, std::string_view data) const {
    const std::string_view d = framer_.delimiter.bytes;
    const std::size_t dl = d.size();
    // A delimiter begun in carry: its first k bytes end carry, its last e = dl - k begin data.
    for (std::size_t e = 1; e < dl && e <= data.size(); ++e) {
        const std::size_t k = dl - e;
        if (carry.size() >= k && carry.substr(carry.size() - k) == d.substr(0, k) &&
            data.substr(0, e) == d.substr(k))
            return e;
    }
    const std::size_t at = data.find(d);
    return at == std::string_view::npos ? std::string_view::npos : at + dl;
}

Error FrameDecoder::feed_delimited(std::string_view data, Sink sink, void* ctx) {
    const std::string_view d = framer_.delimiter.bytes;
    const std::size_t dl = d.size();
    const std::size_t max = framer_.max_message;
    // Bytes without a delimiter that prove the message too long: max_message + the delimiter.
    const std::size_t hopeless = max + dl;
    auto too_long = [&](std::size_t n) {
        return fail(framing(
            n != 0 ? "a message of " + num(n) +
                         " bytes before the delimiter is over Framer.max_message (" + num(max) + ")"
                   : "no delimiter within Framer.max_message (" + num(max) + ") bytes"));
    };
    // First complete the message begun in an earlier feed (or the messages a pause kept).
    while (!carry_.empty()) {
        const std::string_view c = carry_.view();
        const std::size_t at = c.find(d, scan_from_);
        if (at != std::string_view::npos) {
            if (at > max) return too_long(at);
            const bool go = deliver(c.substr(0, at + dl), 0, at, sink, ctx);
            carry_.consume(at + dl);
            scan_from_ = 0;
            if (!go) {
                keep(data);
                carry_.trim();
                return {};
            }
            continue;
        }
        scan_from_ = c.size() >= dl - 1 ? c.size() - (dl - 1) : 0;
        if (c.size() >= hopeless) return too_long(0);  // what a pause kept may prove it
        if (data.empty()) return {};
        const std::size_t end = first_delimiter_end(c, data);
        if (end == std::string_view::npos) {
            if (c.size() + data.size() >= hopeless) return too_long(0);
            carry_.append(data.data(), data.size(), 0);
            return {};
        }
        if (c.size() + end - dl > max) return too_long(c.size() + end - dl);
        carry_.append(data.data(), end, 0);
        data.remove_prefix(end);
    }
    // Then split the rest in place; only an incomplete tail is copied.
    while (!data.empty()) {
        const std::size_t at = data.find(d);
        if (at == std::string_view::npos) {
            if (data.size() >= hopeless) return too_long(0);
            carry_.append(data.data(), data.size(), 0);
            scan_from_ = data.size() >= dl - 1 ? data.size() - (dl - 1) : 0;
            break;
        }
        if (at > max) return too_long(at);
        const bool go = deliver(data.substr(0, at + dl), 0, at, sink, ctx);
        data.remove_prefix(at + dl);
        if (!go) {
            keep(data);
            break;
        }
    }
    carry_.trim();
    return {};
}

FrameDecoder::Step FrameDecoder::parse(std::string_view in, Error& err) {
    switch (framer_.kind) {
        case FramerKind::length_field:
            return parse_length(in, err);
        case FramerKind::fixed_size: {
            const std::size_t n = framer_.fixed_size.size;
            return in.size() < n ? Step::need(n) : Step::whole(n, 0, n);
        }
        case FramerKind::json_header:
            return parse_json(in, err);
        default:
            err = framing("internal: no counted framing for this framer");
            return Step::error();
    }
}

FrameDecoder::Step FrameDecoder::parse_length(std::string_view in, Error& err) const {
    const Framer::LengthField& lf = framer_.length;
    const std::size_t off = lf.offset;
    std::uint64_t value = 0;
    std::size_t width = 0;
    switch (lf.encoding) {
        case LengthEncoding::big_endian:
        case LengthEncoding::little_endian: {
            width = lf.width;
            if (in.size() < off + width) return Step::need(off + width);
            value = load_field(in.data() + off, width, lf.encoding == LengthEncoding::big_endian);
            break;
        }
        case LengthEncoding::varint_leb128:
        case LengthEncoding::varint_be128: {
            const bool leb = lf.encoding == LengthEncoding::varint_leb128;
            for (std::size_t i = 0;; ++i) {
                if (i == kMaxVarintBytes) {
                    err = framing("varint length field longer than 10 bytes");
                    return Step::error();
                }
                if (in.size() <= off + i) return Step::need(off + i + 1);
                const std::uint8_t b = byte_at(in, off + i);
                const std::uint64_t group = b & 0x7f;
                if (leb) {
                    if (i == kMaxVarintBytes - 1 && group > 1) {
                        err = framing("varint length field overflows 64 bits");
                        return Step::error();
                    }
                    value |= group << (7 * i);
                } else {
                    if (value > (std::numeric_limits<std::uint64_t>::max() >> 7)) {
                        err = framing("varint length field overflows 64 bits");
                        return Step::error();
                    }
                    value = (value << 7) | group;
                }
                if ((b & 0x80) == 0) {
                    width = i + 1;
                    break;
                }
            }
            break;
        }
    }
    // body = value + adjustment, checked: negative or over max_message is an error, found
    // before a single byte of the body is stored.
    std::uint64_t body = value;
    const std::int64_t adj = lf.adjustment;
    const std::uint64_t max = framer_.max_message;
    if (adj < 0) {
        const std::uint64_t neg = std::uint64_t{0} - static_cast<std::uint64_t>(adj);
        if (value < neg) {
            err = framing("length field " + num(value) + " with Framer.length.adjustment " +
                          std::to_string(adj) + " gives a negative length");
            return Step::error();
        }
        body = value - neg;
    } else if (adj > 0) {
        const auto pos = static_cast<std::uint64_t>(adj);
        body = value > max ? value : value + pos;  // value <= max and pos <= max: no overflow
    }
    if (body > max) {
        err = framing("length field declares " + num(value) +
                      (adj != 0 ? " (adjusted by " + std::to_string(adj) + ")" : std::string()) +
                      " bytes, over Framer.max_message (" + num(max) + ")");
        return Step::error();
    }
    const std::size_t header = off + width;
    const std::size_t total = header + static_cast<std::size_t>(body);
    if (in.size() < total) return Step::need(total);
    return Step::whole(total, header, static_cast<std::size_t>(body));
}

FrameDecoder::Step FrameDecoder::parse_json(std::string_view in, Error& err) {
    if (in.size() < 2) return Step::need(2);
    const std::size_t hlen = (std::size_t{byte_at(in, 0)} << 8) | byte_at(in, 1);
    if (hlen > framer_.json.max_header) {
        err = framing("JSON header of " + num(hlen) + " bytes is over Framer.json.max_header (" +
                      num(framer_.json.max_header) + ")");
        return Step::error();
    }
    if (in.size() < 2 + hlen) return Step::need(2 + hlen);
    if (!json_ready_) {
        if (!parse_json_header(in.substr(2, hlen), err)) return Step::error();
        json_ready_ = true;
    }
    const std::size_t content = static_cast<std::size_t>(json_info_.content_length);
    const std::size_t total = 2 + hlen + content;
    if (in.size() < total) return Step::need(total);
    return Step::whole(total, 2 + hlen, content);
}

// Parses and checks a JSON header as the tutorial's receiver does: a JSON object with the four
// keys byteorder, content-length, content-type and content-encoding.
bool FrameDecoder::parse_json_header(std::string_view text, Error& err) {
    if (text.size() >= 3 && text.substr(0, 3) == "\xef\xbb\xbf") {
        err = framing("JSON header begins with a byte order mark");
        return false;
    }
    try {
        *json_ = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    } catch (const std::exception& e) {
        err = framing(std::string("JSON header could not be parsed: ") + e.what());
        return false;
    }
    const nlohmann::json& j = *json_;
    if (j.is_discarded()) {
        err = framing("JSON header is not valid JSON (UTF-8)");
        return false;
    }
    if (!j.is_object()) {
        err = framing(std::string("JSON header is a JSON ") + j.type_name() + ", not an object");
        return false;
    }
    const auto length = j.find("content-length");
    if (length == j.end()) {
        err = framing("JSON header has no content-length");
        return false;
    }
    // Signed only when written with a minus sign; "-0" is 0, as Python reads it.
    if (length->is_number_integer() && !length->is_number_unsigned() &&
        length->get<std::int64_t>() < 0) {
        err = framing("JSON header's content-length is negative");
        return false;
    }
    if (!length->is_number_integer()) {
        err = framing(std::string("JSON header's content-length is a ") +
                      (length->is_number_float() ? "non-integer number" : length->type_name()) +
                      ", not a non-negative integer");
        return false;
    }
    const auto content_length = length->get<std::uint64_t>();
    if (content_length > framer_.max_message) {
        err = framing("JSON header's content-length " + num(content_length) +
                      " is over Framer.max_message (" + num(framer_.max_message) + ")");
        return false;
    }
    json_info_ = JsonMessageHeader{};
    json_info_.content_length = content_length;
    struct Key {
        const char* name;
        std::string_view* into;
    };
    for (const Key& key :
         {Key{"byteorder", &json_info_.byteorder}, Key{"content-type", &json_info_.content_type},
          Key{"content-encoding", &json_info_.content_encoding}}) {
        const auto it = j.find(key.name);
        if (it == j.end()) {
            err = framing(std::string("JSON header has no ") + key.name);
            return false;
        }
        if (!it->is_string()) {
            err = framing(std::string("JSON header's ") + key.name + " is a " + it->type_name() +
                          ", not a string");
            return false;
        }
        *key.into = it->get_ref<const std::string&>();
    }
    return true;
}

}  // namespace pipeworks
