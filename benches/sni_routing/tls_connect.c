/*
 * Load generator for benches/sni_routing/run.sh: THREADS blocking threads
 * that, for SECONDS, each open a new TCP connection, make a full TLS
 * handshake with SNI (no session resumption), check that the certificate's
 * subject CN is EXPECT_CN (so a misrouted connection counts as a failure),
 * send `GET / HTTP/1.0`, read the reply to EOF and close.
 *
 *   cc -O2 -o tls_connect tls_connect.c -lssl -lcrypto -lpthread
 *   tls_connect 127.0.0.1 PORT SNI EXPECT_CN THREADS SECONDS
 *
 * Prints: `ok N failed F seconds S conn_per_s R`.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static SSL_CTX *ctx;
static struct sockaddr_in target;
static const char *sni, *expect_cn;
static double deadline;

struct counts {
    long ok, failed;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* One connection; 1 if everything checked out. */
static int one(void)
{
    int ok = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one_ = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_, sizeof one_);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0) {
        close(fd);
        return 0;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, sni);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) == 1) {
        X509 *cert = SSL_get1_peer_certificate(ssl);
        char cn[256] = "";
        if (cert) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                      sizeof cn);
            X509_free(cert);
        }
        static const char req[] = "GET / HTTP/1.0\r\n\r\n";
        if (strcmp(cn, expect_cn) == 0 && SSL_write(ssl, req, sizeof req - 1) > 0) {
            char buf[4096];
            long got = 0;
            int n;
            while ((n = SSL_read(ssl, buf, sizeof buf)) > 0)
                got += n;
            ok = got > 0;
        }
    }
    SSL_free(ssl);
    close(fd);
    return ok;
}

static void *worker(void *arg)
{
    struct counts *c = arg;
    while (now() < deadline) {
        if (one())
            c->ok++;
        else
            c->failed++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s IP PORT SNI EXPECT_CN THREADS SECONDS\n", argv[0]);
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1)
        return 2;
    sni = argv[3];
    expect_cn = argv[4];
    int threads = atoi(argv[5]);
    double seconds = atof(argv[6]);
    if (threads < 1 || threads > 256 || seconds <= 0)
        return 2;
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    pthread_t tid[256];
    struct counts counts[256];
    memset(counts, 0, sizeof counts);
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, worker, &counts[i]);
    long ok = 0, failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        ok += counts[i].ok;
        failed += counts[i].failed;
    }
    double took = now() - start;
    printf("ok %ld failed %ld seconds %.2f conn_per_s %.0f\n", ok, failed, took, ok / took);
    return 0;
}
