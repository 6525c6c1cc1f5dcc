// TlsFilter in a pipe's byte filter seam: handshakes, bulk data both ways, a refused
// certificate and framed messages, on TCP pairs over loopback. The certificates are made here
// at test time, so nothing expires in the tree.
#include "pipe_support.hpp"
#include "transport/pipe_impl.hpp"
#include "transport/tls_filter.hpp"

#include <pipeworks/pipeworks.hpp>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <functional>
#include <memory>
#include <string>

using namespace pipeworks;
using namespace pw_test;

namespace {

struct FreeKey {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct FreeCert {
    void operator()(X509* c) const { X509_free(c); }
};
struct FreeCtx {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using Key = std::unique_ptr<EVP_PKEY, FreeKey>;
using Cert = std::unique_ptr<X509, FreeCert>;
using Ctx = std::unique_ptr<SSL_CTX, FreeCtx>;

Key ec_key() {
    EVP_PKEY_CTX* kc = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
    REQUIRE(kc != nullptr);
    EVP_PKEY* k = nullptr;
    const bool ok = EVP_PKEY_keygen_init(kc) == 1 &&
                    EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kc, NID_X9_62_prime256v1) == 1 &&
                    EVP_PKEY_keygen(kc, &k) == 1;
    EVP_PKEY_CTX_free(kc);
    REQUIRE(ok);
    return Key(k);
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    REQUIRE(ext != nullptr);
    REQUIRE(X509_add_ext(cert, ext, -1) == 1);
    X509_EXTENSION_free(ext);
}

// A certificate for `key` named `cn`, signed by `issuer` (itself when null).
Cert make_cert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, long serial,
               bool ca) {
    Cert c(X509_new());
    REQUIRE(c);
    X509* x = c.get();
    REQUIRE(X509_set_version(x, 2) == 1);
    REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
    REQUIRE(X509_set_pubkey(x, key) == 1);
    X509_NAME* name = X509_get_subject_name(x);
    REQUIRE(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                       reinterpret_cast<const unsigned char*>(cn), -1, -1, 0) == 1);
    X509* signer = issuer != nullptr ? issuer : x;
    REQUIRE(X509_set_issuer_name(x, X509_get_subject_name(signer)) == 1);
    if (ca) {
        add_ext(x, signer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, signer, NID_basic_constraints, "CA:FALSE");
        add_ext(x, signer, NID_subject_alt_name, "IP:127.0.0.1,IP:::1,DNS:localhost");
    }
    add_ext(x, signer, NID_subject_key_identifier, "hash");
    REQUIRE(X509_sign(x, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0);
    return c;
}

// A test CA, a server certificate it signed, and the contexts both ends use.
struct Pki {
    Key ca_key = ec_key();
    Cert ca = make_cert(ca_key.get(), "pipeworks test CA", nullptr, nullptr, 1, true);
    Key server_key = ec_key();
    Cert server_cert = make_cert(server_key.get(), "localhost", ca.get(), ca_key.get(), 2, false);

    Ctx server_ctx() const {
        Ctx ctx(SSL_CTX_new(TLS_server_method()));
        REQUIRE(ctx);
        REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1);
        REQUIRE(SSL_CTX_use_certificate(ctx.get(), server_cert.get()) == 1);
        REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), server_key.get()) == 1);
        return ctx;
    }
    // trust_ca false: a client that knows no CA at all, so the server's chain cannot verify.
    Ctx client_ctx(bool trust_ca = true) const {
        Ctx ctx(SSL_CTX_new(TLS_client_method()));
        REQUIRE(ctx);
        REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) == 1);
        if (trust_ca)
            REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca.get()) == 1);
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
        return ctx;
    }
};

const Pki& pki() {
    static const Pki p;
    return p;
}

std::string loopback_host(Family f) {
    return f == Family::ipv4 ? "127.0.0.1" : "::1";
}

struct TlsEnds {
    detail::TlsFilter* client = nullptr;
    detail::TlsFilter* server = nullptr;
};

// Puts TLS into both ends of a pair that is up and has exchanged nothing yet. The client's
// ClientHello leaves with its first flush: every test sends from the client first.
TlsEnds install_tls(TcpPair& pair, Family f, SSL_CTX* client_ctx, SSL_CTX* server_ctx) {
    auto cf = std::make_unique<detail::TlsFilter>(client_ctx, detail::TlsRole::client,
                                                  loopback_host(f), loopback_host(f));
    auto sf = std::make_unique<detail::TlsFilter>(server_ctx, detail::TlsRole::server);
    TlsEnds ends{cf.get(), sf.get()};
    detail::PipeImpl::of(*pair.client).filter_ = std::move(cf);
    detail::PipeImpl::of(*pair.accepted).filter_ = std::move(sf);
    return ends;
}

}  // namespace

TEST_CASE("TLS: a handshake, then hello both ways") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        TlsEnds tls = install_tls(pair, f, cc.get(), sc.get());
        auto at_server = collect(*pair.accepted);
        auto at_client = collect(*pair.client);
        REQUIRE(!pair.client->send("hello from the client"));
        REQUIRE(!pair.accepted->send("hello from the server"));
        run_until(
            loop, [&] { return at_server->data.size() >= 21 && at_client->data.size() >= 21; },
            "hello both ways");
        CHECK(at_server->data == "hello from the client");
        CHECK(at_client->data == "hello from the server");
        CHECK(tls.client->handshake_done());
        CHECK(tls.server->handshake_done());
        CHECK(!tls.client->peer_closed());

        // close_notify reaches the peer as the end of its TLS input. It leaves with the
        // client's next flush, which the server's message (still readable) brings about.
        tls.client->close_notify();
        REQUIRE(!pair.accepted->send("after close_notify"));
        run_until(
            loop, [&] { return tls.server->peer_closed(); }, "close_notify received");
        CHECK(at_client->data == "hello from the serverafter close_notify");
    }
}

TEST_CASE("TLS: 4 MiB from the client arrive whole, and the echo comes back") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        (void)install_tls(pair, f, cc.get(), sc.get());
        auto at_server = collect(*pair.accepted);
        pair.accepted->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
        auto at_client = collect(*pair.client);
        const std::string big = payload(4 * 1024 * 1024, 7);
        REQUIRE(!pair.client->send(big));
        run_until(
            loop,
            [&] {
                return at_server->data.size() >= big.size() && at_client->data.size() >= big.size();
            },
            "4 MiB there and back", std::chrono::milliseconds(20000));
        const std::hash<std::string> h;
        CHECK(at_server->data.size() == big.size());
        CHECK(h(at_server->data) == h(big));
        CHECK(at_client->data.size() == big.size());
        CHECK(h(at_client->data) == h(big));
    }
}

TEST_CASE("TLS: a client that does not trust the server's CA ends with the reason") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx(false);
        Ctx sc = pki().server_ctx();
        (void)install_tls(pair, f, cc.get(), sc.get());
        auto at_server = collect(*pair.accepted);
        auto client_end = watch_end(*pair.client);
        auto server_end = watch_end(*pair.accepted);
        REQUIRE(!pair.client->send("never readable by the server"));
        run_until(
            loop, [&] { return client_end->count == 1 && server_end->count == 1; },
            "both ends ended");
        const Error& e = client_end->info.error;
        CAPTURE(e.message);
        CHECK(client_end->info.reason == EndReason::error);
        CHECK(e == errc::tls_failed);
        CHECK(e.message.find("certificate verify failed") != std::string::npos);
        CHECK(e.message.find("unable to get local issuer certificate") != std::string::npos);
        CHECK(at_server->data.empty());
    }
}

TEST_CASE("TLS: a certificate for another address is refused") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto pair = tcp_pair(loop, f);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        const std::string other = f == Family::ipv4 ? "192.0.2.1" : "2001:db8::1";
        detail::PipeImpl::of(*pair.client).filter_ =
            std::make_unique<detail::TlsFilter>(cc.get(), detail::TlsRole::client, "", other);
        detail::PipeImpl::of(*pair.accepted).filter_ =
            std::make_unique<detail::TlsFilter>(sc.get(), detail::TlsRole::server);
        auto client_end = watch_end(*pair.client);
        REQUIRE(!pair.client->send("hello"));
        run_until(
            loop, [&] { return client_end->count == 1; }, "the client ended");
        const Error& e = client_end->info.error;
        CAPTURE(e.message);
        CHECK(e == errc::tls_failed);
        CHECK(e.message.find("certificate verify failed") != std::string::npos);
        CHECK(e.message.find("IP address mismatch") != std::string::npos);
    }
}

TEST_CASE("TLS: a framed pipe exchanges 100 messages") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        NetConf conf;
        conf.framer = Framer::message();
        auto pair = tcp_pair(loop, f, conf, conf);
        Ctx cc = pki().client_ctx();
        Ctx sc = pki().server_ctx();
        (void)install_tls(pair, f, cc.get(), sc.get());
        pair.accepted->on_message(
            [](Pipe& p, const Message& m) { CHECK(!p.send("re: " + std::string(m.data))); });
        auto got = collect(*pair.client);
        for (int i = 0; i < 100; ++i) REQUIRE(!pair.client->send("m" + std::to_string(i)));
        run_until(
            loop, [&] { return got->msgs.size() == 100; }, "100 replies");
        REQUIRE(got->msgs.size() == 100);
        for (int i = 0; i < 100; ++i)
            CHECK(got->msgs[static_cast<std::size_t>(i)] == "re: m" + std::to_string(i));
    }
}
