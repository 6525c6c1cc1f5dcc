// UDP sends: a datagram at once when the socket takes it, else queued with a copy.
#include "transport/pipe_impl.hpp"
#include "transport/socket_util.hpp"

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
    if (to.empty() || to.port() == 0)
        return Error(errc::invalid_address, "send_to on " + describe() + ": destination \"" +
                                                to.to_string() + "\" has no port");
    const std::size_t payload_size = bytes.size();
    if (framed_ && frame) {
        frame_scratch_.clear();
        if (Error e = frame_into(bytes, frame_scratch_)) return e;
        bytes = frame_scratch_;
    }
    if (bytes.size() > max_datagram(to))
        return Error(errc::message_too_large, "send_to " + to.to_string() + ": " +
                                                  std::to_string(bytes.size()) +
                                                  " bytes do not fit in one datagram (at most " +
                                                  std::to_string(max_datagram(to)) + ")");
    auto count = [&] {
        count_sent(payload_size);
        last_activity_ms_ = uv_now(core_->loop);
    };
    // A connect()ed socket (adopted) sends to its peer without an address.
    const bool to_peer = udp_connected_ && to == peer_;
    if (udp_queued_ == 0) {
        uv_buf_t b =
            uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
        int n = uv_udp_try_send(&h_.udp, &b, 1, to_peer ? nullptr : to.sockaddr());
        if (n >= 0) {
            count();
            return {};
        }
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
    count();
    note_queued();
    return {};
}

}  // namespace pipeworks::detail
