/* The RSA-2048 verify baseline of docs/performance.md ("SAML sign-in cost in instructions"):
 * gcc -O2 -o /tmp/rsa_verify_cost scripts/rsa_verify_cost.c -lcrypto
 * valgrind --tool=callgrind --instr-atstart=no /tmp/rsa_verify_cost 1000   (then the part file .1) */
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <valgrind/callgrind.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* N RSA-2048 PKCS#1 v1.5 SHA-256 verifications, counted between ZERO and DUMP (part file .1). */
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200;
    EVP_PKEY *key = EVP_RSA_gen(2048);
    unsigned char *der = NULL; int len = i2d_PUBKEY(key, &der);
    const unsigned char *p = der; EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, len);
    unsigned char msg[32]; memset(msg, 7, 32);
    unsigned char sig[512]; size_t siglen = sizeof sig;
    EVP_MD_CTX *s = EVP_MD_CTX_new();
    EVP_DigestSignInit(s, NULL, EVP_sha256(), NULL, key);
    EVP_DigestSign(s, sig, &siglen, msg, 32);
    CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS;
    int ok = 0;
    for (int i = 0; i < n; i++) {
        EVP_MD_CTX *v = EVP_MD_CTX_new();
        EVP_DigestVerifyInit(v, NULL, EVP_sha256(), NULL, pub);
        ok += EVP_DigestVerify(v, sig, siglen, msg, 32) == 1;
        EVP_MD_CTX_free(v);
    }
    CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION;
    printf("%d of %d verified\n", ok, n);
    return ok == n ? 0 : 1;
}
