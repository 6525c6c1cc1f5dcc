// Included by its own path: the test suites compile this file without lib/ on the path.
#include "wire.hpp"

#include <algorithm>
#include <utility>

namespace pipeworks::packet_wire {
namespace {

// F's bits below the flags.
constexpr std::uint64_t kHasChannel = 1;
constexpr std::uint64_t kIsRequest = 2;
constexpr std::uint64_t kResponseOk = 4;

std::string num(std::uint64_t v) {
    return std::to_string(v);
}

Error bad_packet(std::string message) {
    return Error(errc::invalid_config, "packet encode: " + std::move(message));
}

// Why a request of wire rq_type 0 is neither EOF nor ERQ; empty when it is one of them.
// The rq_type is reserved for the two, and Python takes any other use as a malformed EOF.
std::string reserved_rq_type_misuse(const Packet& p) {
    std::string why;
    if (p.tag > 1)
        why = "tag " + num(p.tag) + " (EOF has tag 0, ERQ tag 1)";
    else if (p.channel != 0)
        why = "channel " + num(p.channel) + " (must be 0)";
    else if (p.flags != 0)
        why = "flags " + num(p.flags) + " (must be 0)";
    else if (!p.payload.empty())
        why = "a payload of " + num(p.payload.size()) + " bytes (must be empty)";
    else
        return {};
    return "a request with the reserved wire rq_type 0 is neither EOF nor ERQ: " + why;
}

// F for a packet encode() accepts, or the reason it refuses the packet.
Error wire_flags(const Packet& p, std::uint64_t& f) {
    const std::uint64_t has_channel = p.channel != 0 ? kHasChannel : 0;
    if (p.is_request) {
        if (p.flags > kMaxRequestFlags)
            return bad_packet("request flags " + num(p.flags) + " do not fit (at most " +
                              num(kMaxRequestFlags) + ")");
        if (p.ok) return bad_packet("a request has no ok (it belongs to responses)");
        if (p.rq_type == 0) {
            std::string why = reserved_rq_type_misuse(p);
            if (!why.empty()) return bad_packet(std::move(why));
        }
        f = (p.flags << 2) | kIsRequest | has_channel;
    } else {
        if (p.flags > kMaxResponseFlags)
            return bad_packet("response flags " + num(p.flags) + " do not fit (at most " +
                              num(kMaxResponseFlags) + ")");
        if (p.rq_type != 0)
            return bad_packet("a response has no rq_type (got " + num(p.rq_type) + ")");
        f = (p.flags << 3) | (p.ok ? kResponseOk : 0) | has_channel;
    }
    return {};
}

// The body's bytes before the payload.
std::size_t header_size(const Packet& p, std::uint64_t f) {
    std::size_t n = bsuint_size(p.tag) + bsuint_size(f);
    if (f & kHasChannel) n += bsuint_size(p.channel);
    if (p.is_request) n += bsuint_size(p.rq_type);
    return n;
}

Error checked_body_size(const Packet& p, std::uint64_t f, std::size_t& size) {
    const std::size_t header = header_size(p, f);
    // Room for BSUInt(L) too, so that the whole packet's size cannot wrap either.
    if (p.payload.size() > SIZE_MAX - header - kMaxBSUIntBytes)
        return Error(errc::message_too_large, "packet encode: a payload of " +
                                                  num(p.payload.size()) + " bytes is too large");
    size = header + p.payload.size();
    return {};
}

char* put_bsuint(std::uint64_t value, char* at) {
    for (std::size_t g = bsuint_size(value); g-- > 1;)
        *at++ = static_cast<char>(((value >> (7 * g)) & 0x7f) | 0x80);
    *at++ = static_cast<char>(value & 0x7f);
    return at;
}

// Reads one field of a body, prefixing an error with the field's name.
bool read_field(std::string_view& in, const char* name, std::uint64_t& value, Error& err) {
    Result<BSUInt> r = read_bsuint(in);
    if (!r) {
        Error e = r.error();
        err = Error(e.code, std::string("packet: ") + name + ": " + e.message);
        return false;
    }
    value = r->value;
    in.remove_prefix(r->size);
    return true;
}

}  // namespace

void append_bsuint(std::uint64_t value, std::string& out) {
    char buf[kMaxBSUIntBytes];
    out.append(buf, put_bsuint(value, buf));
}

Result<BSUInt> read_bsuint(std::string_view in) {
    std::uint64_t value = 0;
    for (std::size_t i = 0;; ++i) {
        // Checked before the end of `in`: ten continuation bytes are wrong whatever follows.
        if (i == kMaxBSUIntBytes) return Error(errc::framing_error, "BSUInt longer than 10 bytes");
        if (i == in.size())
            return Error(errc::framing_error,
                         i == 0 ? std::string("BSUInt missing: no bytes left")
                                : "BSUInt truncated: the input ends after " + num(i) +
                                      " bytes, the last with the continuation bit (0x80) set");
        const auto b = static_cast<std::uint8_t>(in[i]);
        if (value > (std::numeric_limits<std::uint64_t>::max() >> 7))
            return Error(errc::framing_error, "BSUInt overflows 64 bits");
        value = (value << 7) | (b & 0x7fu);
        if ((b & 0x80) == 0) return BSUInt{value, i + 1};
    }
}

Result<std::size_t> body_size(const Packet& p) {
    std::uint64_t f = 0;
    std::size_t size = 0;
    if (Error e = wire_flags(p, f)) return e;
    if (Error e = checked_body_size(p, f, size)) return e;
    return size;
}

Error encode(const Packet& p, std::string& out) {
    std::uint64_t f = 0;
    std::size_t body = 0;
    if (Error e = wire_flags(p, f)) return e;
    if (Error e = checked_body_size(p, f, body)) return e;
    const std::size_t total = bsuint_size(body) + body;
    if (total > out.max_size() - out.size())
        return Error(errc::message_too_large,
                     "packet encode: a packet of " + num(total) + " bytes does not fit the buffer");
    char header[5 * kMaxBSUIntBytes];
    char* at = put_bsuint(body, header);
    at = put_bsuint(p.tag, at);
    at = put_bsuint(f, at);
    if (f & kHasChannel) at = put_bsuint(p.channel, at);
    if (p.is_request) at = put_bsuint(p.rq_type, at);
    // One growth at most, geometric so that a buffer gathering many packets stays amortised.
    if (out.capacity() - out.size() < total)
        out.reserve(std::max(out.size() + total, std::min(2 * out.capacity(), out.max_size())));
    out.append(header, at);
    out.append(p.payload);
    return {};
}

Result<Packet> decode_body(std::string_view body) {
    Packet p;
    Error err;
    std::uint64_t f = 0;
    if (!read_field(body, "tag", p.tag, err) || !read_field(body, "F", f, err)) return err;
    if ((f & kHasChannel) && !read_field(body, "channel", p.channel, err)) return err;
    p.is_request = (f & kIsRequest) != 0;
    if (p.is_request) {
        if (!read_field(body, "rq_type", p.rq_type, err)) return err;
        p.flags = f >> 2;
    } else {
        p.ok = (f & kResponseOk) != 0;
        p.flags = f >> 3;
    }
    p.payload = body;
    if (p.is_request && p.rq_type == 0) {
        std::string why = reserved_rq_type_misuse(p);
        if (!why.empty()) return Error(errc::framing_error, "packet: " + why);
    }
    return p;
}

}  // namespace pipeworks::packet_wire
