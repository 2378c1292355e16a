"""signing_key.get / rotate and the SDK Receiver verifying tern's signatures (spec §5.11, §8, §21)."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest
from qstash import QStash, Receiver
from qstash.errors import SignatureError

from tern_harness import USER1, USER2, make_client


def _b64url_json(part: str):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def deliver(client: QStash, receiver, path: str, body: str = "signed body"):
    url = receiver.url(path)
    res = client.message.publish(url=url, body=body)
    (req,) = receiver.wait_for_message(res.message_id)
    return url, req


def test_dev_banner_prints_user1_credentials(tern):
    out = tern.output()
    assert "running" in out.lower()
    assert tern.banner.get("QSTASH_TOKEN") == USER1["token"]
    assert tern.banner.get("QSTASH_CURRENT_SIGNING_KEY") == USER1["current"]
    assert tern.banner.get("QSTASH_NEXT_SIGNING_KEY") == USER1["next"]
    assert str(tern.port) in tern.banner.get("QSTASH_URL", "")


def test_signing_key_get_returns_dev_keys(client, client_user2):
    keys = client.signing_key.get()
    assert keys.current == USER1["current"]
    assert keys.next == USER1["next"]
    keys2 = client_user2.signing_key.get()
    assert keys2.current == USER2["current"]
    assert keys2.next == USER2["next"]


def test_receiver_verifies_delivery(client, receiver, uid):
    url, req = deliver(client, receiver, f"/sig/{uid}", body=f"signed {uid}")
    sig = req.header("Upstash-Signature")
    assert sig
    r = Receiver(USER1["current"], USER1["next"])
    r.verify(signature=sig, body=req.text, url=url)
    r.verify(signature=sig, body=req.text)  # url check optional

    with pytest.raises(SignatureError):
        r.verify(signature=sig, body=req.text + "tampered", url=url)
    with pytest.raises(SignatureError):
        r.verify(signature=sig, body=req.text, url=url + "/other")


def test_signature_uses_current_key_and_spec_claims(client, receiver, uid):
    url, req = deliver(client, receiver, f"/claims/{uid}?q=1", body=f"claims {uid}")
    sig = req.header("Upstash-Signature")

    # signed with the CURRENT key, not the next one
    Receiver(USER1["current"], USER1["current"]).verify(signature=sig, body=req.text, url=url)
    with pytest.raises(SignatureError):
        Receiver(USER1["next"], USER1["next"]).verify(signature=sig, body=req.text, url=url)

    header = _b64url_json(sig.split(".")[0])
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(
        sig,
        USER1["current"],
        algorithms=["HS256"],
        issuer="Upstash",
        options={"require": ["iss", "sub", "exp", "nbf", "iat"]},
    )
    assert claims["iss"] == "Upstash"
    assert claims["sub"] == url
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 60
    assert claims["jti"].startswith("jwt_")
    assert not claims.get("aud")
    want = base64.urlsafe_b64encode(hashlib.sha256(req.body).digest()).decode()
    assert claims["body"].rstrip("=") == want.rstrip("=")


def test_empty_body_is_signed(client, receiver, uid):
    url = receiver.url(f"/empty/{uid}")
    res = client.message.publish(url=url)
    (req,) = receiver.wait_for_message(res.message_id)
    assert req.body == b""
    Receiver(USER1["current"], USER1["next"]).verify(signature=req.header("Upstash-Signature"), body="", url=url)


def test_user2_deliveries_are_signed_with_user2_keys(client_user2, receiver, uid):
    url, req = deliver(client_user2, receiver, f"/u2sig/{uid}")
    sig = req.header("Upstash-Signature")
    Receiver(USER2["current"], USER2["next"]).verify(signature=sig, body=req.text, url=url)
    with pytest.raises(SignatureError):
        Receiver(USER1["current"], USER1["next"]).verify(signature=sig, body=req.text, url=url)


def test_rotate_keys_and_verify_with_old_and_new_receivers(fresh_tern, receiver, uid):
    """Uses a private server: rotation changes user 1's keys for the rest of its life."""
    client = make_client(fresh_tern)
    k0, k1 = USER1["current"], USER1["next"]
    assert (client.signing_key.get().current, client.signing_key.get().next) == (k0, k1)

    # before rotation: signed with k0
    url, req = deliver(client, receiver, f"/rot0/{uid}")
    Receiver(k0, k1).verify(signature=req.header("Upstash-Signature"), body=req.text, url=url)

    rotated = client.signing_key.rotate()
    assert rotated.current == k1, "after rotation the new current key is the old next key"
    assert rotated.next not in (k0, k1)
    assert rotated.next.startswith("sig_")
    k2 = rotated.next
    got = client.signing_key.get()
    assert (got.current, got.next) == (k1, k2)

    # a delivery after one rotation is signed with k1 ...
    url, req = deliver(client, receiver, f"/rot1/{uid}")
    sig = req.header("Upstash-Signature")
    Receiver(k1, k2).verify(signature=sig, body=req.text, url=url)  # receiver with the new keys
    Receiver(k0, k1).verify(signature=sig, body=req.text, url=url)  # receiver still holding the old keys
    with pytest.raises(SignatureError):
        Receiver(k0, k0).verify(signature=sig, body=req.text, url=url)

    # rotating twice without updating receivers breaks verification (spec §8)
    rotated2 = client.signing_key.rotate()
    assert rotated2.current == k2
    url, req = deliver(client, receiver, f"/rot2/{uid}")
    sig = req.header("Upstash-Signature")
    Receiver(k2, rotated2.next).verify(signature=sig, body=req.text, url=url)
    with pytest.raises(SignatureError):
        Receiver(k0, k1).verify(signature=sig, body=req.text, url=url)

    # keys are per user: user 2 is unaffected
    keys2 = make_client(fresh_tern, USER2["token"]).signing_key.get()
    assert (keys2.current, keys2.next) == (USER2["current"], USER2["next"])
