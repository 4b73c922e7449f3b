/* test_sha256.c: Check suite of server/sha256.c: FIPS 180-4 test vectors, hex encoding,
 * constant-time comparison and strict UTF-8 validation. */
#include "tests.h"
#include "server.h"

#include <string.h>

static void hash_hex(const char *msg, size_t n, char out[65])
{
	uint8_t h[32];
	sha256(msg, n, h);
	hex_encode(h, 32, out);
}

START_TEST(test_sha256_vectors)
{
	char hex[65];
	hash_hex("", 0, hex);
	ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	hash_hex("abc", 3, hex);
	ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	hash_hex(two, strlen(two), hex);
	ck_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	/* 55 and 56 bytes straddle the one-block/two-block padding boundary. */
	char a[1000];
	memset(a, 'a', sizeof(a));
	hash_hex(a, 55, hex);
	ck_assert_str_eq(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
	hash_hex(a, 56, hex);
	ck_assert_str_eq(hex, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
	hash_hex(a, 1000, hex);
	ck_assert_str_eq(hex, "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
}
END_TEST

START_TEST(test_ct_equal_and_utf8)
{
	ck_assert(ct_equal("abcd", "abcd", 4));
	ck_assert(!ct_equal("abcd", "abce", 4));
	ck_assert(ct_equal("", "x", 0));
	ck_assert(utf8_valid("plain", 5));
	ck_assert(utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
	ck_assert(!utf8_valid("\xc3", 1));            /* truncated */
	ck_assert(!utf8_valid("\xc0\xaf", 2));        /* overlong '/' */
	ck_assert(!utf8_valid("\xed\xa0\x80", 3));    /* surrogate */
	ck_assert(!utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	ck_assert(!utf8_valid("\xff", 1));
	ck_assert(!utf8_valid("a\x80", 2));           /* stray continuation */
}
END_TEST

Suite *sha256_suite(void)
{
	Suite *s = suite_create("sha256");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_sha256_vectors);
	tcase_add_test(tc, test_ct_equal_and_utf8);
	suite_add_tcase(s, tc);
	return s;
}
