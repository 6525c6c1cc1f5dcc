// UDP sends: a datagram at once when the socket takes it, else queued with a copy.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

#include <pipeworks/interfaces.hpp>

namespace pipeworks::detail {

namespace {

// A datagram that had to wait for the socket; owns a copy of its bytes.
struct UdpSendReq {
    uv_udp_send_t req;
    std::weak_ptr<PipeImpl> pipe;
    Address to;
    std::string data;
};

void udp_send_done(uv_udp_send_t* req, int status) {
    auto* r = static_cast<UdpSendReq*>(req->data);
    auto p = r->pipe.lock();
    if (p) {
        p->udp_queued_ -= r->data.size();
        if (status != 0 && status != UV_ECANCELED) ++p->dropped_;
        if (!p->closing()) p->after_written();
    }
    delete r;
}

int submit_udp(UdpSendReq* r, uv_udp_t* u) {
    r->req.data = r;
    uv_buf_t b = uv_buf_init(r->data.data(), static_cast<unsigned>(r->data.size()));
    // An empty `to`: the socket is connected and sends to its peer (libuv refuses an address).
    return uv_udp_send(&r->req, u, &b, 1, r->to.empty() ? nullptr : r->to.sockaddr(),
                       udp_send_done);
}

}  // namespace

// Closes fd on libuv's thread pool (a lingering close may block).

Error PipeImpl::send_datagram(std::string_view bytes, const Address& to, bool frame) {
    if (ending() || ended())
        return Error(errc::pipe_ended, "send on " + describe() + ": the pipe has ended (" +
                                           to_string(end_info_.reason) + ")");
    if (kind_ != PipeKind::udp)
        return Error(errc::wrong_pipe_kind,
                     "send_to on " + describe() + ": only UDP pipes send datagrams to an address");
    // Not open yet: its destination's name is being resolved; an empty `to` is that one.
    const bool hold = !connected_;
    if ((!hold && to.empty()) || (!to.empty() && to.port() == 0))
        return Error(errc::invalid_address, "send_to on " + describe() + ": destination \"" +
                                                to.to_string() + "\" has no port");
    const std::size_t payload_size = bytes.size();
    if (framed_ && frame) {
        frame_scratch_.clear();
        if (Error e = frame_into(bytes, frame_scratch_)) return e;
        bytes = frame_scratch_;
    }
    // Before the family is known, the smaller limit (IPv4's) applies.
    const std::size_t limit = hold ? max_datagram(Address::any(Family::ipv4, 0)) : max_datagram(to);
    if (bytes.size() > limit)
        return Error(errc::message_too_large, "send_to " +
                                                  (to.empty() ? describe() : to.to_string()) +
                                                  ": " + std::to_string(bytes.size()) +
                                                  " bytes do not fit in one datagram (at most " +
                                                  std::to_string(limit) + ")");
    if (hold) {
        // Each held datagram also costs its entry, so empty ones cannot grow the list unbounded.
        const std::size_t cost = bytes.size() + queue_entry_overhead * (udp_held_.size() + 1);
        if (over_write_cap(cost)) return write_cap_error(bytes.size());
        udp_held_.push_back({to, std::string(bytes)});
        udp_queued_ += bytes.size();
        count_sent(payload_size);
        note_queued();
        return {};
    }
    if (Error e = write_datagram(bytes, to)) return e;
    count_sent(payload_size);
    last_activity_ms_ = uv_now(core_->loop);
    return {};
}

Error PipeImpl::write_datagram(std::string_view bytes, const Address& to) {
    // A connect()ed socket (adopted) sends to its peer without an address.
    const bool to_peer = udp_connected_ && to == peer_;
    if (udp_queued_ == 0) {
        uv_buf_t b =
            uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
        int n = uv_udp_try_send(&h_.udp, &b, 1, to_peer ? nullptr : to.sockaddr());
        if (n >= 0) return {};
        if (n != UV_EAGAIN && n != UV_ENOBUFS && n != UV_ENOMEM) return uv_fail("send_to", n, to);
    }
    if (over_write_cap(bytes.size())) return write_cap_error(bytes.size());
    // The datagram waits for the socket: the request owns a copy of the bytes.
    auto* r = new UdpSendReq{{}, self_, to_peer ? Address{} : to, std::string(bytes)};
    if (int rc = submit_udp(r, &h_.udp); rc != 0) {
        delete r;
        return uv_fail("send_to", rc, to);
    }
    udp_queued_ += bytes.size();
    note_queued();
    return {};
}

void PipeImpl::open_resolved_udp(const Address& dest) {
    if (Error e = open_udp(udp_local_, dest)) {
        fail(EndReason::error, std::move(e));
        return;
    }
    // Already counted as sent: one the socket refuses now is a dropped datagram, as for any that
    // fails after it was queued. Those not yet taken stay in udp_queued_, so if the pipe ends on
    // the way they are its unsent bytes.
    std::vector<HeldDatagram> held = std::move(udp_held_);
    udp_held_.clear();
    for (const HeldDatagram& d : held) {
        if (ending()) break;
        udp_queued_ -= d.bytes.size();
        const Address& to = d.to.empty() ? peer_ : d.to;
        if (to.family() != local_.family() || d.bytes.size() > max_datagram(to) ||
            write_datagram(d.bytes, to))
            ++dropped_;
    }
    if (!held.empty()) last_activity_ms_ = uv_now(core_->loop);
}

}  // namespace pipeworks::detail

// ---- Multicast: libuv's membership calls take the interface as an address text; for IPv6
// only its scope (the interface index) counts.
namespace pipeworks {

namespace {

using detail::PipeImpl;

Error not_udp(const PipeImpl& p, const char* op) {
    if (p.kind_ == PipeKind::udp)  // a UDP pipe whose socket waits for its destination's name
        return Error(errc::not_connected, std::string(op) + " on " + p.describe() +
                                              ": no socket until the destination is resolved "
                                              "(wait for on_up)");
    return Error(errc::wrong_pipe_kind,
                 std::string(op) + " on " + p.describe() + ": multicast applies to UDP pipes only");
}

// The interface as libuv wants it for `family`: "" (the system's choice), an IPv4 address, or
// "::%NAME".
Result<std::string> interface_text(std::string_view interface, Family family, const char* op) {
    if (interface.empty()) return std::string();
    if (family == Family::ipv4 && Address::ip(interface, 0)) return std::string(interface);
    auto itfs = list_interfaces();
    if (!itfs) return itfs.error();
    for (const Interface& i : *itfs) {
        if (i.name != interface) continue;
        if (family == Family::ipv6) return "::%" + i.name;  // libuv reads the scope by name
        for (const InterfaceAddress& a : i.addresses)
            if (a.address.is_v4()) return a.address.host();
        return Error(errc::invalid_address, std::string(op) + ": interface \"" +
                                                std::string(interface) + "\" has no IPv4 address");
    }
    return Error(errc::invalid_address,
                 std::string(op) + ": no interface \"" + std::string(interface) + "\"");
}

Error membership(Pipe& pipe, const Address& group, std::string_view interface,
                 const Address& source, uv_membership m, const char* op) {
    auto& p = PipeImpl::of(pipe);
    if (p.kind_ != PipeKind::udp || p.udp_resolving()) return not_udp(p, op);
    if (p.ending()) return Error(errc::pipe_ended, std::string(op) + ": the pipe has ended");
    if (group.empty())
        return Error(errc::invalid_address, std::string(op) + ": a group address is required");
    if (!source.empty() && source.family() != group.family())
        return Error(errc::invalid_address, std::string(op) + " " + group.host() + ": source " +
                                                source.host() + " is of another family");
    auto itf = interface_text(interface, group.family(), op);
    if (!itf) return itf.error();
    const std::string g = group.host();
    const char* i = itf->empty() ? nullptr : itf->c_str();
    const int rc = source.empty() ? uv_udp_set_membership(&p.h_.udp, g.c_str(), i, m)
                                  : uv_udp_set_source_membership(&p.h_.udp, g.c_str(), i,
                                                                 source.host().c_str(), m);
    if (rc != 0) {
        std::string what = std::string(op) + " " + g;
        if (!source.empty()) what += " from " + source.host();
        if (i != nullptr) what += " on " + std::string(interface);
        return p.uv_fail(what.c_str(), rc);
    }
    return {};
}

}  // namespace

Error Pipe::join_group(const Address& group, std::string_view interface, const Address& source) {
    return membership(*this, group, interface, source, UV_JOIN_GROUP, "join_group");
}

Error Pipe::leave_group(const Address& group, std::string_view interface, const Address& source) {
    return membership(*this, group, interface, source, UV_LEAVE_GROUP, "leave_group");
}

Error Pipe::set_multicast_loop(bool on) {
    auto& p = PipeImpl::of(*this);
    if (p.kind_ != PipeKind::udp || p.udp_resolving()) return not_udp(p, "set_multicast_loop");
    if (int rc = uv_udp_set_multicast_loop(&p.h_.udp, on ? 1 : 0); rc != 0)
        return p.uv_fail("set_multicast_loop", rc);
    return {};
}

Error Pipe::set_multicast_ttl(int ttl) {
    auto& p = PipeImpl::of(*this);
    if (p.kind_ != PipeKind::udp || p.udp_resolving()) return not_udp(p, "set_multicast_ttl");
    if (ttl < 1 || ttl > 255)
        return Error(errc::invalid_config,
                     "set_multicast_ttl: must be from 1 to 255, got " + std::to_string(ttl));
    if (int rc = uv_udp_set_multicast_ttl(&p.h_.udp, ttl); rc != 0)
        return p.uv_fail("set_multicast_ttl", rc);
    return {};
}

Error Pipe::set_multicast_interface(std::string_view interface) {
    auto& p = PipeImpl::of(*this);
    if (p.kind_ != PipeKind::udp || p.udp_resolving()) return not_udp(p, "set_multicast_interface");
    const Address local = p.local_;
    auto itf = interface_text(interface, local.empty() ? Family::ipv4 : local.family(),
                              "set_multicast_interface");
    if (!itf) return itf.error();
    if (int rc = uv_udp_set_multicast_interface(&p.h_.udp, itf->empty() ? nullptr : itf->c_str());
        rc != 0)
        return p.uv_fail(("set_multicast_interface " + std::string(interface)).c_str(), rc);
    return {};
}

}  // namespace pipeworks
