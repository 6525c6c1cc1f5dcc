// The TLS pipe suites' common ground: a test PKI as PEM text, server and client settings that
// trust it, a TLS echo server that keeps what it reports, and a client that sends and waits.
#pragma once

#include "pipe_support.hpp"
#include "tls_support.hpp"

#include <pipeworks/pipeworks.hpp>

#include <memory>
#include <string>
#include <vector>

namespace pw_test {

// The test PKI as PEM text: a CA, the server's certificate (localhost, 127.0.0.1, ::1), bad
// ones (expired, another name, self-signed, signed by an unknown CA) and a client's.
struct Pem {
    std::string ca, key, cert, expired, other_name, self_signed, unknown_ca, client_cert;
    std::string client_key;
};

inline const Pem& pem() {
    static const Pem p = [] {
        Pem r;
        Key ca_key = ec_key();
        Cert ca = make_cert(ca_key.get(), "pipeworks test CA", nullptr, nullptr, 1, true);
        Key key = ec_key();
        r.ca = pem_of(ca.get());
        r.key = pem_of(key.get());
        r.cert = pem_of(make_cert(key.get(), "localhost", ca.get(), ca_key.get(), 2, false).get());
        r.expired = pem_of(make_cert(key.get(), "localhost", ca.get(), ca_key.get(), 3, false,
                                     "IP:127.0.0.1,IP:::1,DNS:localhost", -48 * 3600, -24 * 3600)
                               .get());
        r.other_name = pem_of(make_cert(key.get(), "elsewhere", ca.get(), ca_key.get(), 4, false,
                                        "DNS:elsewhere.invalid,IP:192.0.2.7")
                                  .get());
        r.self_signed = pem_of(make_cert(key.get(), "localhost", nullptr, nullptr, 5, false).get());
        Key other_ca_key = ec_key();
        Cert other_ca = make_cert(other_ca_key.get(), "another CA", nullptr, nullptr, 6, true);
        r.unknown_ca = pem_of(
            make_cert(key.get(), "localhost", other_ca.get(), other_ca_key.get(), 7, false).get());
        Key ck = ec_key();
        r.client_key = pem_of(ck.get());
        r.client_cert = pem_of(make_cert(ck.get(), "test client", ca.get(), ca_key.get(), 8, false,
                                         "DNS:client.invalid")
                                   .get());
        return r;
    }();
    return p;
}

inline pipeworks::NetConf server_conf(const std::string& cert = pem().cert) {
    return tls_server_conf(cert, pem().key);
}

inline pipeworks::NetConf client_conf() {
    return tls_client_conf(pem().ca);
}

// A TLS echo server: every accepted pipe echoes; the errors it reports and how each accepted
// pipe ended are kept.
struct EchoServer {
    pipeworks::PipePtr pipe;
    std::vector<pipeworks::Error> errors;
    std::vector<pipeworks::EndInfo> ends;
    int accepted = 0;
};

inline std::shared_ptr<EchoServer> echo_server(pipeworks::Loop& loop, pipeworks::Family f,
                                               const pipeworks::NetConf& conf) {
    using namespace pipeworks;
    auto s = std::make_shared<EchoServer>();
    s->pipe = must(Pipe::listen(loop, lo(f), conf), "listen");
    std::weak_ptr<EchoServer> weak = s;
    s->pipe->on_accept([weak](Pipe&, const PipePtr& c) {
        if (auto s = weak.lock()) ++s->accepted;
        c->on_end([weak](Pipe&, const EndInfo& e) {
            if (auto s = weak.lock()) s->ends.push_back(e);
        });
    });
    s->pipe->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    s->pipe->on_error([weak](Pipe&, const Error& e) {
        if (auto s = weak.lock()) s->errors.push_back(e);
    });
    return s;
}

// Connects with `conf`, sends `msg`, and waits for the echo or the end.
struct Outcome {
    pipeworks::PipePtr pipe;
    std::shared_ptr<Sink> got;
    std::shared_ptr<Ends> end;
    bool up = false;
};

inline Outcome talk(pipeworks::Loop& loop, const pipeworks::Address& to,
                    const pipeworks::NetConf& conf, const std::string& msg, const char* what) {
    using namespace pipeworks;
    Outcome o;
    o.pipe = must(Pipe::connect(loop, to, conf), "connect");
    o.got = collect(*o.pipe);
    o.end = watch_end(*o.pipe);
    o.pipe->on_up([&o](Pipe&) { o.up = true; });
    REQUIRE(!o.pipe->send(msg));
    run_until(
        loop, [&] { return o.got->data.size() >= msg.size() || o.end->count > 0; }, what);
    return o;
}

}  // namespace pw_test
