// TLS through NetConf (use_ssl + tls) on real loopback connections, v4 and v6: round trips,
// what the pipe reports, every refused certificate with its reason, plaintext and TLS peers
// on the wrong port, the handshake bound, client certificates, ALPN, resumption, half-close,
// close_notify against truncation, framed pipes and packet connections over TLS, relays into
// TLS pipes.
#include "tls_pipe_support.hpp"
#include "transport/pipe_impl.hpp"

#include <pipeworks/pipeworks.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>

using namespace pipeworks;
using namespace pw_test;
using namespace std::chrono_literals;

namespace {

// A raw socket connected to `to`, for the peers that are not TLS (or not polite).
Fd raw_connect(const Address& to) {
    Fd fd(::socket(to.family() == Family::ipv4 ? AF_INET : AF_INET6, SOCK_STREAM, 0));
    REQUIRE(fd.fd >= 0);
    REQUIRE(::connect(fd.fd, to.sockaddr(),
                      to.family() == Family::ipv4 ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)) ==
            0);
    return fd;
}

}  // namespace

TEST_CASE("TLS pipes: a verified round trip; up after the handshake; stats count plaintext") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = echo_server(loop, f, server_conf());
        const std::string msg = payload(100'000, 3);
        Outcome o = talk(loop, server->pipe->local_address(), client_conf(), msg, "echo");
        REQUIRE(o.end->count == 0);
        CHECK(o.got->data == msg);
        CHECK(o.up);
        CHECK(o.pipe->is_up());
        const TlsInfo i = o.pipe->tls_info();
        CHECK(i.enabled);
        CHECK(i.established);
        CHECK(i.verified);
        CHECK(!i.resumed);
        CHECK(i.version == "TLSv1.3");
        CHECK(!i.cipher.empty());
        CHECK(i.peer_subject.find("localhost") != std::string::npos);
        CHECK(i.alpn.empty());
        CHECK(o.pipe->stats().bytes_out == msg.size());
        CHECK(o.pipe->stats().bytes_in == msg.size());
        CHECK(server->accepted == 1);
        CHECK(server->errors.empty());
        CHECK(!Pipe::connect(loop, server->pipe->local_address()).value()->tls_info().enabled);
    }
}

TEST_CASE("TLS pipes: connect by name checks the name; up waits for the handshake") {
    Loop loop;
    auto server = echo_server(loop, Family::ipv4, server_conf());
    auto p = must(Pipe::connect(
        loop, "localhost:" + std::to_string(server->pipe->local_address().port()), client_conf()));
    bool up = false, up_was_established = false;
    p->on_up([&](Pipe& pipe) {
        up = true;
        up_was_established = pipe.tls_info().established;
    });
    auto got = collect(*p);
    REQUIRE(!p->send("by name"));
    run_until(
        loop, [&] { return got->data == "by name"; }, "echo by name");
    CHECK(up);
    CHECK(up_was_established);
    CHECK(p->tls_info().verified);
}

TEST_CASE("TLS pipes: each bad certificate fails with its reason, on both sides") {
    struct Bad {
        const char* what;
        std::string cert;
        const char* reason;
    };
    const Bad bad[] = {
        {"expired", pem().expired, "certificate has expired"},
        {"another name", pem().other_name, "mismatch"},
        {"self-signed", pem().self_signed, "self-signed certificate"},
        {"unknown CA", pem().unknown_ca, "unable to get local issuer certificate"},
    };
    for (const Bad& b : bad) {
        for (Family f : kFamilies) {
            CAPTURE(b.what);
            CAPTURE(family_name(f));
            Loop loop;
            auto server = echo_server(loop, f, server_conf(b.cert));
            Outcome o = talk(loop, server->pipe->local_address(), client_conf(), "x", "refused");
            REQUIRE(o.end->count == 1);
            CAPTURE(o.end->info.error.message);
            CHECK(o.end->info.reason == EndReason::error);
            CHECK(o.end->info.error == errc::tls_failed);
            CHECK(mentions(o.end->info.error, "certificate verify failed"));
            CHECK(mentions(o.end->info.error, b.reason));
            CHECK(!o.up);
            CHECK(o.got->data.empty());
            // The server hears the client's alert; the pipe was never handed over.
            run_until(
                loop, [&] { return !server->errors.empty(); }, "the server reports it");
            CHECK(server->errors[0] == errc::tls_failed);
            CHECK(server->accepted == 0);
        }
    }
}

TEST_CASE("TLS pipes: verification can be turned off, and the pipe says so") {
    Loop loop;
    auto server = echo_server(loop, Family::ipv4, server_conf(pem().self_signed));
    NetConf c;
    c.use_ssl = true;
    c.tls.insecure_skip_verify = true;
    Outcome o = talk(loop, server->pipe->local_address(), c, "unverified", "echo");
    CHECK(o.got->data == "unverified");
    CHECK(o.pipe->tls_info().established);
    CHECK(!o.pipe->tls_info().verified);
}

TEST_CASE("TLS pipes: a plaintext client on a TLS port and a TLS client on a plaintext port") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        // Plaintext into TLS: the server reports it; the plain client's pipe ends.
        auto tls_server = echo_server(loop, f, server_conf());
        Outcome plain = talk(loop, tls_server->pipe->local_address(), NetConf{},
                             "GET / HTTP/1.0\r\n\r\n", "plain client ends");
        run_until(
            loop, [&] { return !tls_server->errors.empty() && plain.end->count == 1; },
            "both sides end");
        CAPTURE(tls_server->errors[0].message);
        CHECK(tls_server->errors[0] == errc::tls_failed);
        CHECK(mentions(tls_server->errors[0], "TLS handshake failed"));
        CHECK(tls_server->accepted == 0);
        CHECK(plain.got->data.find("GET") == std::string::npos);

        // TLS into plaintext: a server that greets in plain text.
        auto plain_server = must(Pipe::listen(loop, lo(f)));
        plain_server->on_accept([](Pipe&, const PipePtr& c) { (void)c->send("220 hello\r\n"); });
        Outcome o =
            talk(loop, plain_server->local_address(), client_conf(), "x", "TLS client ends");
        REQUIRE(o.end->count == 1);
        CAPTURE(o.end->info.error.message);
        CHECK(o.end->info.error == errc::tls_failed);
        CHECK(mentions(o.end->info.error, "wrong version number"));
        CHECK(!o.up);
    }
}

TEST_CASE("TLS pipes: a silent peer ends the handshake by ssl_handshake, on both sides") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        // A client against a TCP server that never answers.
        auto silent = must(Pipe::listen(loop, lo(f)));
        NetConf c = client_conf();
        c.ssl_handshake = 300ms;
        const auto t0 = std::chrono::steady_clock::now();
        auto p = must(Pipe::connect(loop, silent->local_address(), c));
        auto end = watch_end(*p);
        run_until(
            loop, [&] { return end->count == 1; }, "client handshake timeout");
        const auto waited = std::chrono::steady_clock::now() - t0;
        CHECK(waited >= 300ms);
        CHECK(waited < 3s);
        CHECK(end->info.reason == EndReason::timeout);
        CHECK(end->info.error == errc::tls_handshake_timeout);
        CHECK(mentions(end->info.error, "NetConf.ssl_handshake"));

        // A server whose client connects and says nothing.
        NetConf s = server_conf();
        s.ssl_handshake = 300ms;
        auto server = echo_server(loop, f, s);
        Fd quiet = raw_connect(server->pipe->local_address());
        run_until(
            loop, [&] { return !server->errors.empty(); }, "server handshake timeout");
        CHECK(server->errors[0] == errc::tls_handshake_timeout);
        char buf[16];
        CHECK(::recv(quiet.fd, buf, sizeof buf, 0) <= 0);  // closed by the server
    }
}

TEST_CASE("TLS pipes: a server that requires client certificates") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf s = server_conf();
        s.tls.require_client_cert = true;
        s.tls.ca_pem = pem().ca;
        auto server = echo_server(loop, f, s);
        PipePtr seen;
        server->pipe->on_accept([&](Pipe&, const PipePtr& c) { seen = c; });

        // Without one: refused, and both sides say why.
        Outcome none = talk(loop, server->pipe->local_address(), client_conf(), "x", "refused");
        run_until(
            loop, [&] { return none.end->count == 1 && !server->errors.empty(); }, "refused");
        CAPTURE(none.end->info.error.message);
        CHECK(none.end->info.error == errc::tls_failed);
        CHECK(mentions(none.end->info.error, "certificate required"));
        CHECK(server->errors[0] == errc::tls_failed);
        CHECK(!seen);

        // With one: served, and the server knows who.
        NetConf c = client_conf();
        c.tls.cert_pem = pem().client_cert;
        c.tls.key_pem = pem().client_key;
        Outcome ok = talk(loop, server->pipe->local_address(), c, "with a cert", "echo");
        CHECK(ok.got->data == "with a cert");
        REQUIRE(seen);
        CHECK(seen->tls_info().verified);
        CHECK(seen->tls_info().peer_subject.find("test client") != std::string::npos);
    }
}

TEST_CASE("TLS pipes: ALPN picks the server's first common protocol; none in common fails") {
    Loop loop;
    NetConf s = server_conf();
    s.tls.alpn = {"http/1.1", "pw/1"};
    auto server = echo_server(loop, Family::ipv4, s);
    PipePtr seen;
    server->pipe->on_accept([&](Pipe&, const PipePtr& c) { seen = c; });
    NetConf c = client_conf();
    c.tls.alpn = {"pw/1", "http/1.1"};
    Outcome o = talk(loop, server->pipe->local_address(), c, "alpn", "echo");
    CHECK(o.got->data == "alpn");
    CHECK(o.pipe->tls_info().alpn == "http/1.1");
    REQUIRE(seen);
    CHECK(seen->tls_info().alpn == "http/1.1");

    c.tls.alpn = {"h2"};
    Outcome none = talk(loop, server->pipe->local_address(), c, "x", "no common protocol");
    REQUIRE(none.end->count == 1);
    CAPTURE(none.end->info.error.message);
    CHECK(none.end->info.error == errc::tls_failed);
    CHECK(mentions(none.end->info.error, "no application protocol"));
}

TEST_CASE("TLS pipes: a client that reconnects resumes its session") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = echo_server(loop, f, server_conf());
        Outcome first = talk(loop, server->pipe->local_address(), client_conf(), "one", "first");
        CHECK(first.got->data == "one");
        CHECK(!first.pipe->tls_info().resumed);
        first.pipe->close();
        run_until(
            loop, [&] { return first.end->count == 1; }, "first closed");
        Outcome second = talk(loop, server->pipe->local_address(), client_conf(), "two", "second");
        CHECK(second.got->data == "two");
        CHECK(second.pipe->tls_info().resumed);
        CHECK(second.pipe->tls_info().verified);

        NetConf no_resume = client_conf();
        no_resume.tls.session_resumption = false;
        Outcome third = talk(loop, server->pipe->local_address(), no_resume, "three", "third");
        CHECK(third.got->data == "three");
        CHECK(!third.pipe->tls_info().resumed);
    }
}

TEST_CASE("TLS pipes: half-close over TLS; close_notify is a clean end, its absence is not") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f), server_conf()));
        PipePtr accepted;
        std::string at_server;
        bool server_eof = false;
        std::optional<EndInfo> server_end;
        server->on_accept([&](Pipe&, const PipePtr& c) {
            accepted = c;
            c->on_message([&](Pipe&, const Message& m) { at_server += m.data; });
            c->on_eof([&](Pipe& p) {
                server_eof = true;
                // The reply after the client finished sending: the write side still works.
                CHECK(!p.send("reply after your close_notify"));
                CHECK(!p.shutdown());
            });
            c->on_end([&](Pipe&, const EndInfo& e) { server_end = e; });
        });
        auto client = must(Pipe::connect(loop, server->local_address(), client_conf()));
        auto got = collect(*client);
        auto client_end = watch_end(*client);
        const std::string big = payload(1 << 20, 9);
        REQUIRE(!client->send(big));
        REQUIRE(!client->shutdown());
        run_until(
            loop, [&] { return client_end->count == 1 && server_end.has_value(); },
            "both ends finish");
        CAPTURE(client_end->info.error.message);
        CAPTURE(server_end->error.message);
        CHECK(at_server == big);
        CHECK(server_eof);
        CHECK(got->data == "reply after your close_notify");
        CHECK(client_end->info.reason == EndReason::peer_close);
        CHECK(!client_end->info.error);
        CHECK(server_end->reason == EndReason::peer_close);
        CHECK(!server_end->error);

        // A peer that closes TCP without close_notify: truncation, an error.
        std::optional<EndInfo> cut_end;
        accepted.reset();
        server->on_accept([&](Pipe&, const PipePtr& c) {
            accepted = c;
            c->on_end([&](Pipe&, const EndInfo& e) { cut_end = e; });
        });
        auto rude = must(Pipe::connect(loop, server->local_address(), client_conf()));
        bool rude_up = false;
        rude->on_up([&](Pipe&) { rude_up = true; });
        REQUIRE(!rude->send("then gone"));
        run_until(
            loop, [&] { return rude_up && accepted; }, "rude client up");
        // The server's session tickets are read first: unread bytes would make the close a
        // reset, not a FIN.
        run_for(loop, 100ms);
        // White box: the rude client forgets its close_notify.
        detail::PipeImpl::of(*rude).tls_->close_sent = true;
        rude->close();
        run_until(
            loop, [&] { return cut_end.has_value(); }, "truncation seen");
        CAPTURE(cut_end->error.message);
        CHECK(cut_end->reason == EndReason::error);
        CHECK(cut_end->error == errc::tls_truncated);
        CHECK(mentions(cut_end->error, "close_notify"));
    }
}

TEST_CASE("TLS pipes: a framed pipe and a packet connection over TLS") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf s = server_conf();
        s.framer = Framer::message();
        auto server = echo_server(loop, f, s);
        NetConf c = client_conf();
        c.framer = Framer::message();
        auto p = must(Pipe::connect(loop, server->pipe->local_address(), c));
        auto got = collect(*p);
        for (int i = 0; i < 200; ++i) REQUIRE(!p->send("frame " + std::to_string(i)));
        run_until(
            loop, [&] { return got->msgs.size() == 200; }, "200 frames back");
        REQUIRE(got->msgs.size() == 200);
        for (int i = 0; i < 200; ++i)
            CHECK(got->msgs[static_cast<std::size_t>(i)] == "frame " + std::to_string(i));

        // Packets: requests answered through TLS.
        auto listener = must(Pipe::listen(loop, lo(f), server_conf()));
        PacketConnectionPtr served;
        listener->on_accept([&](Pipe&, const PipePtr& a) {
            served = must(PacketConnection::open(a), "open accepted");
            served->handle(7, [](PacketRequest& rq) -> HandlerResult {
                return "tls:" + std::string(rq.payload);
            });
        });
        auto conn = must(PacketConnection::open(
            must(Pipe::connect(loop, listener->local_address(), client_conf())), {}));
        std::vector<std::string> answers;
        for (int i = 0; i < 50; ++i)
            conn->submit(7, std::to_string(i), [&](PacketResult& r) {
                CHECK(r);
                answers.push_back(r.payload);
            });
        run_until(
            loop, [&] { return answers.size() == 50; }, "50 packet responses");
        REQUIRE(answers.size() == 50);
        CHECK(answers[0] == "tls:0");
        CHECK(answers[49] == "tls:49");
    }
}

TEST_CASE("TLS pipes: what a relay forwards to a TLS pipe before it is up is encrypted") {
    // Large forwards normally keep the read block as it is: a TLS pipe still connecting has no
    // filter yet, and those bytes must not reach its socket in plaintext.
    Loop loop;
    auto server = echo_server(loop, Family::ipv4, server_conf());
    auto front = must(Pipe::listen(loop, lo(Family::ipv4)));
    front->on_accept([&](Pipe&, const PipePtr& plain) {
        auto tls = must(Pipe::connect(loop, server->pipe->local_address(), client_conf()));
        CHECK(!Pipe::relay(plain, tls));
    });
    const std::string msg = payload(300'000, 9);
    Outcome o = talk(loop, front->local_address(), {}, msg, "echo through the relay");
    CHECK(o.end->count == 0);
    CHECK(o.got->data.size() == msg.size());
    CHECK((o.got->data == msg));
    CHECK(server->errors.empty());
}

TEST_CASE("TLS pipes: bad settings are refused when the pipe opens, naming the field") {
    Loop loop;
    NetConf s = server_conf();
    s.tls.cert_pem.clear();
    s.tls.key_pem.clear();
    auto r = Pipe::listen(loop, lo(Family::ipv4), s);
    REQUIRE(!r);
    CHECK(r.error() == errc::invalid_config);
    CHECK(mentions(r.error(), "NetConf.tls.cert_file"));

    s = server_conf();
    s.tls.cert_pem = "not a certificate";
    r = Pipe::listen(loop, lo(Family::ipv4), s);
    REQUIRE(!r);
    CHECK(mentions(r.error(), "NetConf.tls.cert_pem"));

    NetConf c = client_conf();
    c.tls.ca_file = "/nonexistent/ca.pem";
    r = Pipe::connect(loop, Address::ip("127.0.0.1", 9).value(), c);
    REQUIRE(!r);
    CHECK(mentions(r.error(), "NetConf.tls.ca_file"));
    CHECK(mentions(r.error(), "/nonexistent/ca.pem"));

    c = client_conf();
    c.tls.alpn = {""};
    r = Pipe::connect(loop, Address::ip("127.0.0.1", 9).value(), c);
    REQUIRE(!r);
    CHECK(mentions(r.error(), "NetConf.tls.alpn"));

    NetConf u;
    u.use_ssl = true;
    auto ur = Pipe::udp(loop, lo(Family::ipv4), {}, u);
    REQUIRE(!ur);
    CHECK(mentions(ur.error(), "NetConf.use_ssl"));
}

TEST_CASE("TLS pipes: a peer that sends close_notify and closes entirely is a clean end") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f), server_conf()));
        std::optional<EndInfo> server_end;
        std::string at_server;
        server->on_accept([&](Pipe&, const PipePtr& c) {
            c->on_message([&](Pipe&, const Message& m) { at_server += m.data; });
            // Finishing our side too, after the peer is gone: its socket refuses our
            // close_notify and FIN, yet nothing of ours was lost.
            c->on_eof([](Pipe& p) { CHECK(!p.shutdown()); });
            c->on_end([&](Pipe&, const EndInfo& e) { server_end = e; });
        });
        auto client = must(Pipe::connect(loop, server->local_address(), client_conf()));
        REQUIRE(!client->send("last words"));
        client->close();
        run_until(
            loop, [&] { return server_end.has_value(); }, "the server's pipe ends");
        CAPTURE(server_end->error.message);
        CHECK(at_server == "last words");
        CHECK(server_end->reason == EndReason::peer_close);
        CHECK(!server_end->error);
    }
}

TEST_CASE("TLS pipes: small and large sends keep their order, while a write is out and not") {
    // Sends of a full record or more are encrypted when they are made, the small ones at the
    // flush; the bytes must arrive in the order sent, whatever the mix, and end with the FIN.
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = echo_server(loop, f, server_conf());
        auto client =
            must(Pipe::connect(loop, server->pipe->local_address(), client_conf()), "connect");
        auto got = collect(*client);
        auto end = watch_end(*client);
        bool up = false;
        client->on_up([&](Pipe&) { up = true; });
        run_until(
            loop, [&] { return up; }, "handshake");
        std::string sent;
        const std::size_t sizes[] = {10, 16 * 1024, 3, 100'000, 16 * 1024 - 1, 1, 2'000'000, 7};
        std::uint8_t seed = 1;
        for (int round = 0; round < 2; ++round) {
            for (std::size_t n : sizes) {
                const std::string part = payload(n, seed++);
                REQUIRE(!client->send(part));
                sent += part;
            }
            // The second round goes while the first one's writes are still out.
        }
        run_until(
            loop, [&] { return got->data.size() >= sent.size() || end->count > 0; }, "echo");
        REQUIRE(end->count == 0);
        CHECK(got->data.size() == sent.size());
        CHECK(got->data == sent);
        CHECK(client->stats().bytes_out == sent.size());
    }
}

TEST_CASE("TLS pipes: a shutdown right after a large send goes after its last byte") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f), server_conf()));
        std::string at_server;
        std::size_t at_eof = 0;
        bool eof = false;
        server->on_accept([&](Pipe&, const PipePtr& c) {
            c->on_message([&](Pipe&, const Message& m) { at_server += m.data; });
            c->on_eof([&](Pipe&) {
                eof = true;
                at_eof = at_server.size();
            });
        });
        auto client = must(Pipe::connect(loop, server->local_address(), client_conf()));
        bool up = false;
        client->on_up([&](Pipe&) { up = true; });
        run_until(
            loop, [&] { return up; }, "handshake");
        const std::string big = payload(3 * 1024 * 1024 + 5, 4);
        REQUIRE(!client->send("head"));
        REQUIRE(!client->send(big));
        REQUIRE(!client->shutdown());
        run_until(
            loop, [&] { return eof; }, "close_notify after the data");
        CHECK(at_eof == big.size() + 4);
        CHECK(at_server == "head" + big);
    }
}

TEST_CASE("TLS pipes: an idle pipe gives its record buffers back, and works on after") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = echo_server(loop, f, server_conf());
        PipePtr accepted;
        server->pipe->on_accept([&accepted](Pipe&, const PipePtr& c) { accepted = c; });
        const std::string msg = payload(100'000, 4);
        Outcome o = talk(loop, server->pipe->local_address(), client_conf(), msg, "echo");
        REQUIRE(o.got->data == msg);
        REQUIRE(accepted);
        auto& client = detail::PipeImpl::of(*o.pipe);
        auto& served = detail::PipeImpl::of(*accepted);
        REQUIRE(client.filter_);
        REQUIRE(served.filter_);
        const auto idle = std::chrono::steady_clock::now();
        run_until(
            loop,
            [&] { return !client.filter_->holds_buffers() && !served.filter_->holds_buffers(); },
            "both ends give their record buffers back");
        CHECK(std::chrono::steady_clock::now() - idle < 2s);
        CHECK(std::chrono::steady_clock::now() - idle >=
              std::chrono::milliseconds(detail::PipeImpl::kReleaseDelayMs / 2));

        REQUIRE(!o.pipe->send(msg));
        run_until(
            loop, [&] { return o.got->data.size() >= 2 * msg.size() || o.end->count > 0; },
            "the second echo");
        CHECK(o.got->data == msg + msg);
        CHECK(o.end->count == 0);
    }
}

TEST_CASE("TLS pipes: an echo of plaintext that spans several read blocks comes back intact") {
    // The server decrypts each 16 KiB record into many small blocks that reuse one buffer; an
    // echo made from one block must not be overwritten by the next.
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf small = server_conf();
        small.reader_limit = 1024;
        auto server = echo_server(loop, f, small);
        const std::string msg = payload(2'000'000, 9);
        Outcome o = talk(loop, server->pipe->local_address(), client_conf(), msg, "echo");
        REQUIRE(o.end->count == 0);
        CHECK(o.got->data.size() == msg.size());
        CHECK(o.got->data == msg);
        CHECK(server->errors.empty());
    }
}
