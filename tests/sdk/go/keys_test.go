package sdktests

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/upstash/qstash-go"
)

// The SDK's TestKeysGet, against the dev user's keys.
func TestKeysGet(t *testing.T) {
	keys, err := client().Keys().Get()
	must(t, err, "get keys")
	if keys.Current != user1.current || keys.Next != user1.next {
		t.Fatalf("keys %+v", keys)
	}
	keys, err = newClient(shared, user2).Keys().Get()
	must(t, err, "get user 2's keys")
	if keys.Current != user2.current || keys.Next != user2.next {
		t.Fatalf("user 2's keys %+v", keys)
	}
}

func TestReceiverVerifiesADelivery(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	url := r.url("/signed?x=1")
	res, err := c.PublishJSON(qstash.PublishJSONOptions{Url: url, Body: map[string]any{"hello": "world"}})
	must(t, err, "publish")
	d := r.waitForMessage(t, res.MessageId)
	receiver := qstash.NewReceiver(user1.current, user1.next)
	signature := d.Header.Get("Upstash-Signature")
	must(t, receiver.Verify(qstash.VerifyOptions{Signature: signature, Body: string(d.Body), Url: url}), "verify")
	must(t, receiver.Verify(qstash.VerifyOptions{Signature: signature, Body: string(d.Body)}), "verify without url")
	for what, opts := range map[string]qstash.VerifyOptions{
		"another url":  {Signature: signature, Body: string(d.Body), Url: r.url("/signed")},
		"another body": {Signature: signature, Body: string(d.Body) + " ", Url: url},
		"a broken jwt": {Signature: signature[:len(signature)-2], Body: string(d.Body), Url: url},
		"no signature": {Body: string(d.Body), Url: url},
	} {
		if err := receiver.Verify(opts); !errors.Is(err, qstash.ErrInvalidSignature) {
			t.Fatalf("%s: Verify returned %v", what, err)
		}
	}
	// other users' keys do not verify it
	if err := qstash.NewReceiver(user2.current, user2.next).Verify(qstash.VerifyOptions{Signature: signature, Body: string(d.Body)}); err == nil {
		t.Fatal("user 2's keys verify user 1's delivery")
	}
}

// The claims of spec §8, read with the JWT library the SDK itself uses.
func TestSignatureClaims(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	url := r.url("/claims")
	res, err := c.Publish(qstash.PublishOptions{Url: url, Body: "claims body"})
	must(t, err, "publish")
	d := r.waitForMessage(t, res.MessageId)
	claims := jwt.MapClaims{}
	token, err := jwt.ParseWithClaims(d.Header.Get("Upstash-Signature"), claims, func(*jwt.Token) (any, error) {
		return []byte(user1.current), nil
	}, jwt.WithValidMethods([]string{"HS256"}))
	must(t, err, "parse the signature with the current key")
	if token.Header["typ"] != "JWT" {
		t.Fatalf("header %v", token.Header)
	}
	sum := sha256.Sum256([]byte("claims body"))
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if claims["iss"] != "Upstash" || claims["sub"] != url || claims["body"] != base64.URLEncoding.EncodeToString(sum[:]) ||
		exp-iat != 300 || time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute || !strings.HasPrefix(fmt.Sprint(claims["jti"]), "jwt_") {
		t.Fatalf("claims %v", claims)
	}
	if _, ok := claims["nbf"]; !ok {
		t.Fatalf("no nbf claim: %v", claims)
	}
	if aud, ok := claims["aud"]; ok && aud != "" {
		t.Fatalf("aud %v", aud)
	}
}

func TestAnEmptyBodyIsSignedToo(t *testing.T) {
	c := client()
	r := newReceiver(t, nil)
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/empty")})
	must(t, err, "publish")
	d := r.waitForMessage(t, res.MessageId)
	if len(d.Body) != 0 {
		t.Fatalf("body %q", d.Body)
	}
	must(t, qstash.NewReceiver(user1.current, user1.next).Verify(qstash.VerifyOptions{Signature: d.Header.Get("Upstash-Signature"), Url: r.url("/empty")}), "verify")
}

func TestUser2DeliveriesAreSignedWithUser2Keys(t *testing.T) {
	r := newReceiver(t, nil)
	res, err := newClient(shared, user2).Publish(qstash.PublishOptions{Url: r.url("/u2"), Body: "two"})
	must(t, err, "publish")
	d := r.waitForMessage(t, res.MessageId)
	must(t, qstash.NewReceiver(user2.current, user2.next).Verify(qstash.VerifyOptions{Signature: d.Header.Get("Upstash-Signature"), Body: "two", Url: r.url("/u2")}), "verify")
}

// The SDK's TestVerify and TestFailedVerify, with its own signer (claims as the SDK's test
// builds them: unpadded body hash, nbf = iat).
func TestSDKSignerRoundTrip(t *testing.T) {
	body, _ := json.Marshal(map[string]string{"hello": "world"})
	sum := sha256.Sum256(body)
	now := time.Now().Unix()
	token := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"aud": "", "body": strings.TrimRight(base64.URLEncoding.EncodeToString(sum[:]), "="),
		"exp": now + 300, "iat": now, "iss": "Upstash", "jti": fmt.Sprintf("%f", float64(now)), "nbf": now,
		"sub": "https://example.com",
	})
	signature, err := token.SignedString([]byte(user1.current))
	must(t, err, "sign")
	receiver := qstash.NewReceiver(user1.current, user1.next)
	must(t, receiver.Verify(qstash.VerifyOptions{Signature: signature, Url: "https://example.com", Body: string(body)}), "verify")
	if err := receiver.Verify(qstash.VerifyOptions{Signature: signature, Url: "https://example.com/fail", Body: string(body)}); err == nil {
		t.Fatal("a wrong url verified")
	}
}

// Rotation on a private server, so that the shared one keeps the dev keys.
func TestRotateKeys(t *testing.T) {
	server, err := startTern()
	must(t, err, "start a private tern")
	defer server.stop()
	c := newClient(server, user1)
	rotated, err := c.Keys().Rotate()
	must(t, err, "rotate")
	if rotated.Current != user1.next || rotated.Next == "" || rotated.Next == user1.current || rotated.Next == user1.next || !strings.HasPrefix(rotated.Next, "sig_") {
		t.Fatalf("rotated keys %+v", rotated)
	}
	keys, err := c.Keys().Get()
	must(t, err, "get")
	if keys != rotated {
		t.Fatalf("get %+v after rotate %+v", keys, rotated)
	}
	other, err := newClient(server, user2).Keys().Get()
	must(t, err, "get user 2's keys")
	if other.Current != user2.current {
		t.Fatal("rotating user 1's keys changed user 2's")
	}

	r := newReceiver(t, nil)
	res, err := c.Publish(qstash.PublishOptions{Url: r.url("/rotated"), Body: "after rotation"})
	must(t, err, "publish")
	d := r.waitForMessage(t, res.MessageId)
	opts := qstash.VerifyOptions{Signature: d.Header.Get("Upstash-Signature"), Body: "after rotation", Url: r.url("/rotated")}
	must(t, qstash.NewReceiver(rotated.Current, rotated.Next).Verify(opts), "verify with the new keys")
	must(t, qstash.NewReceiver(user1.current, user1.next).Verify(opts), "verify with the old keys (the old next is the new current)")
	if err := qstash.NewReceiver(user1.current, user1.current).Verify(opts); err == nil {
		t.Fatal("the retired key still verifies")
	}
}
