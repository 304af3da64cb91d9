"""tectum.secrets.store: encrypted secrets files, with real age encryption (pyrage) and real
files. Round trip, tamper detection (each refused with a clear message, nothing changed), key
rotation, SSH keys, key lookup, and that no secret value reaches the file or a message."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from tectum.secrets import (
    Keyring,
    SecretsError,
    SecretsFile,
    load_identities,
    load_keyring,
    load_secrets,
    normalize_recipient,
    parse_plaintext_yaml,
    plaintext_yaml,
    secrets_path,
)
from tests.secrets import assert_no_canary, find_canary

Doc = dict[str, Any]


def new_identity() -> Any:
    return pyrage.x25519.Identity.generate()


def public(ident: Any) -> str:
    return str(ident.to_public())


@pytest.fixture
def canary() -> str:
    return f"tectum-canary-{uuid.uuid4().hex} p@ss/w+rd=&"


@pytest.fixture
def alice() -> Any:
    return new_identity()


@pytest.fixture
def bob() -> Any:
    return new_identity()


def make_file(path: Path, ident: Any, values: dict[str, str],
              others: tuple[Any, ...] = ()) -> SecretsFile:
    sf = SecretsFile.create(str(path), [public(ident), *(public(o) for o in others)],
                            display="secrets/prod.yaml")
    for key, value in values.items():
        sf.set(key, value, [ident])
    sf.save()
    return sf


def read_doc(path: Path) -> Doc:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def write_doc(path: Path, doc: Doc) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1 << 30))


def data_identity_of(path: Path, ident: Any) -> Any:
    """The file's data key, opened the way an attacker who is a recipient could."""
    envelope = base64.b64decode(read_doc(path)["tectum"]["data_key"])
    return pyrage.x25519.Identity.from_str(pyrage.decrypt(envelope, [ident]).decode())


# -- round trip --------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path, alice: Any, canary: str) -> None:
    path = tmp_path / "secrets" / "prod.yaml"
    values = {
        "DB_PASSWORD": canary,
        "db.user": "app",
        "multi_line": "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
        "unicode": "pässwörd ✓",
        "empty": "",
    }
    make_file(path, alice, values)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(path.parent)) == ["prod.yaml"], "no temporary file left behind"

    loaded = SecretsFile.load(str(path))
    assert loaded.keys() == sorted(values)
    assert loaded.recipients == [public(alice)]
    assert loaded.decrypt([alice]) == values
    assert loaded.get("DB_PASSWORD", [alice]) == canary
    assert load_secrets(str(tmp_path), "prod", identities=[alice]) == values

    doc = read_doc(path)
    assert set(doc) == {"secrets", "tectum"}
    assert sorted(doc["secrets"]) == sorted(values), "keys stay readable"
    assert doc["tectum"]["version"] == 1
    assert len(doc["tectum"]["mac"]) == 64


def test_set_changes_only_that_value_and_remove(tmp_path: Path, alice: Any) -> None:
    path = tmp_path / "s.yaml"
    make_file(path, alice, {"A": "1", "B": "2"})
    before = read_doc(path)["secrets"]
    sf = SecretsFile.load(str(path))
    assert sf.set("A", "one", [alice]) is False
    assert sf.set("C", "3", [alice]) is True
    sf.save()
    after = read_doc(path)["secrets"]
    assert after["B"] == before["B"], "an unchanged value keeps its ciphertext (small diffs)"
    assert after["A"] != before["A"]
    sf = SecretsFile.load(str(path))
    sf.remove("B", [alice])
    sf.save()
    assert SecretsFile.load(str(path)).decrypt([alice]) == {"A": "one", "C": "3"}
    with pytest.raises(SecretsError, match="has no secret 'B'"):
        SecretsFile.load(str(path)).get("B", [alice])
    with pytest.raises(SecretsError, match="no secret 'B' to remove"):
        SecretsFile.load(str(path)).remove("B", [alice])


def test_invalid_names_refused(tmp_path: Path, alice: Any) -> None:
    sf = make_file(tmp_path / "s.yaml", alice, {})
    for bad in ("", "1abc", "a b", "a/b", "-x", "a:b"):
        with pytest.raises(SecretsError, match="not a valid secret name"):
            sf.set(bad, "v", [alice])
    with pytest.raises(SecretsError, match="not a valid environment name"):
        secrets_path(str(tmp_path), "../etc")
    with pytest.raises(SecretsError, match="not a valid environment name"):
        secrets_path(str(tmp_path), ".hidden")


def test_create_refuses_an_existing_file(tmp_path: Path, alice: Any) -> None:
    path = tmp_path / "s.yaml"
    make_file(path, alice, {"A": "1"})
    before = path.read_bytes()
    with pytest.raises(SecretsError, match="exists already"):
        SecretsFile.create(str(path), [public(alice)])
    with pytest.raises(SecretsError, match="at least one recipient"):
        SecretsFile.create(str(tmp_path / "t.yaml"), [])
    assert path.read_bytes() == before


def test_concurrent_change_is_not_overwritten(tmp_path: Path, alice: Any) -> None:
    path = tmp_path / "s.yaml"
    make_file(path, alice, {"A": "1"})
    first = SecretsFile.load(str(path))
    second = SecretsFile.load(str(path))
    first.set("A", "2", [alice])
    first.save()
    second.set("B", "3", [alice])
    with pytest.raises(SecretsError, match="changed on disk since it was read"):
        second.save()
    assert SecretsFile.load(str(path)).decrypt([alice]) == {"A": "2"}


# -- the canary never reaches the file -----------------------------------------------------------


def test_canary_forms_cover_the_encodings() -> None:
    canary = "tectum-canary-0123456789abcdef p@ss/w+rd"
    raw = canary.encode()
    for prefix in (b"", b"a", b"ab"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = b"x" + encode(prefix + raw + b"tail") + b"y"
            assert find_canary(text, canary), (prefix, encode)
    assert find_canary(f"<{raw.hex()}>", canary)
    assert find_canary(f"<{raw.hex().upper()}>", canary)
    assert find_canary(f"?q={urllib.parse.quote(canary)}&", canary)
    assert find_canary(f"?q={urllib.parse.quote_plus(canary)}&", canary)
    assert not find_canary("tectum-canary-0123456789abcdeX", canary)


def test_canary_not_in_the_file_in_any_form(tmp_path: Path, alice: Any, bob: Any,
                                            canary: str) -> None:
    path = tmp_path / "secrets" / "prod.yaml"
    sf = make_file(path, alice, {"TOKEN": canary, "OTHER": canary + "-2"}, others=(bob,))
    assert_no_canary(path.read_bytes(), canary, str(path))
    sf.rotate([alice])
    sf.save()
    sf.remove_recipient(public(bob), [alice])
    sf.save()
    assert_no_canary(path.read_bytes(), canary, str(path))
    assert_no_canary(repr(sf) + sf.dumps(), canary, "the object's text")


# -- tampering -----------------------------------------------------------------------------------


def _edit_value(doc: Doc, **_: Any) -> None:
    doc["secrets"]["A"] = base64.b64encode(os.urandom(200)).decode()


def _reencrypt_value(doc: Doc, data: Any, **_: Any) -> None:
    # a valid ciphertext to the data key's public key: only the MAC can tell
    forged = pyrage.encrypt(b"attacker's value", [data.to_public()])
    doc["secrets"]["A"] = base64.b64encode(forged).decode()


def _swap_values(doc: Doc, **_: Any) -> None:
    s = doc["secrets"]
    s["A"], s["B"] = s["B"], s["A"]


def _move_value(doc: Doc, **_: Any) -> None:
    doc["secrets"]["RENAMED"] = doc["secrets"].pop("A")


def _copy_value(doc: Doc, **_: Any) -> None:
    doc["secrets"]["EXTRA"] = doc["secrets"]["A"]


def _remove_value(doc: Doc, **_: Any) -> None:
    del doc["secrets"]["B"]


def _remove_mac(doc: Doc, **_: Any) -> None:
    del doc["tectum"]["mac"]


def _empty_mac(doc: Doc, **_: Any) -> None:
    doc["tectum"]["mac"] = ""


def _alter_mac(doc: Doc, **_: Any) -> None:
    mac = doc["tectum"]["mac"]
    doc["tectum"]["mac"] = ("0" if mac[0] != "0" else "1") + mac[1:]


def _add_recipient(doc: Doc, **_: Any) -> None:
    doc["tectum"]["recipients"].append(public(new_identity()))


def _remove_other_recipient(doc: Doc, other: str, **_: Any) -> None:
    doc["tectum"]["recipients"].remove(other)


def _remove_own_recipient(doc: Doc, own: str, **_: Any) -> None:
    doc["tectum"]["recipients"].remove(own)


def _replace_recipient(doc: Doc, other: str, **_: Any) -> None:
    rec = doc["tectum"]["recipients"]
    rec[rec.index(other)] = public(new_identity())


def _foreign_data_key(doc: Doc, foreign: str, **_: Any) -> None:
    doc["tectum"]["data_key"] = foreign


def _extra_top_level(doc: Doc, **_: Any) -> None:
    doc["note"] = "hello"


def _older_version(doc: Doc, **_: Any) -> None:
    doc["tectum"]["version"] = 0


TAMPERS: dict[str, tuple[Callable[..., None], str]] = {
    "edited value": (_edit_value, "MAC does not match"),
    "value re-encrypted to the data key": (_reencrypt_value, "MAC does not match"),
    "two values swapped": (_swap_values, "MAC does not match"),
    "value moved to another key": (_move_value, "MAC does not match"),
    "value copied to a new key": (_copy_value, "MAC does not match"),
    "value removed": (_remove_value, "MAC does not match"),
    "MAC removed": (_remove_mac, "the MAC is missing"),
    "MAC emptied": (_empty_mac, "the MAC is missing"),
    "MAC altered": (_alter_mac, "MAC does not match"),
    "recipient added without re-encryption": (_add_recipient, "MAC does not match"),
    "other recipient removed without re-encryption": (_remove_other_recipient,
                                                      "MAC does not match"),
    "own recipient removed without re-encryption": (_remove_own_recipient,
                                                    "MAC does not match"),
    "recipient replaced": (_replace_recipient, "MAC does not match"),
    "data key of another file": (_foreign_data_key, "MAC does not match"),
    "unexpected top-level entry": (_extra_top_level, "unexpected top-level entries note"),
    "format version": (_older_version, "no valid format version"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampering_is_refused_and_nothing_changes(tmp_path: Path, alice: Any, bob: Any,
                                                   canary: str, name: str) -> None:
    mutate, message = TAMPERS[name]
    path = tmp_path / "secrets" / "prod.yaml"
    make_file(path, alice, {"A": canary, "B": canary + "-b"}, others=(bob,))
    other = make_file(tmp_path / "other.yaml", alice, {"A": "x"}, others=(bob,))
    doc = read_doc(path)
    mutate(doc, data=data_identity_of(path, alice), own=public(alice), other=public(bob),
           foreign=read_doc(Path(other.path))["tectum"]["data_key"])
    write_doc(path, doc)
    tampered = path.read_bytes()

    def refused(action: Callable[[SecretsFile], object]) -> SecretsError:
        with pytest.raises(SecretsError) as info:
            sf = SecretsFile.load(str(path), display="secrets/prod.yaml")
            action(sf)
            sf.save()
        err = info.value
        assert message in str(err), str(err)
        assert "secrets/prod.yaml" in str(err)
        assert_no_canary(str(err) + err.summary, canary, "the error message")
        assert path.read_bytes() == tampered, "nothing was written"
        return err

    err = refused(lambda sf: sf.decrypt([alice]))
    assert "Restore it from version control" in str(err)
    refused(lambda sf: sf.get("A", [alice]))
    refused(lambda sf: sf.set("NEW", "v", [alice]))
    refused(lambda sf: sf.remove("A", [alice]))
    refused(lambda sf: sf.add_recipient(public(new_identity()), [alice]))
    refused(lambda sf: sf.rotate([alice]))
    refused(lambda sf: sf.verify([bob]))
    with pytest.raises(SecretsError, match="secrets/prod.yaml"):
        load_secrets(str(tmp_path), "prod", identities=[alice])


def test_wrong_key_is_refused(tmp_path: Path, alice: Any, canary: str) -> None:
    path = tmp_path / "secrets" / "prod.yaml"
    make_file(path, alice, {"A": canary})
    before = path.read_bytes()
    stranger = new_identity()
    keyring = load_keyring({"TECTUM_AGE_KEY_FILE": str(_key_file(tmp_path, stranger))})
    with pytest.raises(SecretsError) as info:
        SecretsFile.load(str(path), display="secrets/prod.yaml").decrypt(keyring)
    text = str(info.value)
    assert "None of your identities (from TECTUM_AGE_KEY_FILE=" in text
    assert "is a recipient of secrets/prod.yaml" in text
    assert public(stranger) in text and public(alice) in text
    assert "tectum secrets recipients add YOUR_PUBLIC_KEY" in text
    assert info.value.summary == "Not a recipient"
    assert_no_canary(text, canary, "the error message")
    with pytest.raises(SecretsError, match="is a recipient of"):
        sf = SecretsFile.load(str(path))
        sf.set("A", "new", keyring)
    assert path.read_bytes() == before


def _variants(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    cuts = sorted({*range(0, len(data) - 1, 23), len(data) // 2, len(data) - 20})
    out = [(f"truncated at {n}", data[:n]) for n in cuts]
    out += [
        ("random bytes", os.urandom(600)),
        ("not YAML", b"secrets: {{{ [ :\n\t- broken"),
        ("a YAML list", b"- a\n- b\n"),
        ("a YAML scalar", b"hello\n"),
        ("plain YAML without the tectum section", b"secrets:\n  A: hunter2\n"),
        ("binary", b"\x00\xff\xfe" * 50),
    ]
    return out


def test_truncated_and_garbage_files_are_refused(tmp_path: Path, alice: Any,
                                                 canary: str) -> None:
    path = tmp_path / "secrets" / "prod.yaml"
    make_file(path, alice, {"A": canary, "B": "x", "C": "y"})
    original = path.read_bytes()
    for what, data in _variants(path):
        path.write_bytes(data)
        with pytest.raises(SecretsError) as info:
            SecretsFile.load(str(path), display="secrets/prod.yaml").decrypt([alice])
        text = str(info.value)
        assert text.startswith("secrets/prod.yaml"), (what, text)
        assert_no_canary(text, canary, f"the error for {what}")
        assert path.read_bytes() == data, what
    path.write_bytes(original)
    assert SecretsFile.load(str(path)).decrypt([alice])["A"] == canary


def test_truncated_file_message(tmp_path: Path, alice: Any) -> None:
    path = tmp_path / "prod.yaml"
    make_file(path, alice, {"A": "1"})
    text = path.read_text()
    path.write_text(text[: text.index("tectum:")])
    with pytest.raises(SecretsError, match=r"no `tectum:` section .* truncated"):
        SecretsFile.load(str(path))
    path.write_text(text[: text.index("mac:")])
    with pytest.raises(SecretsError, match="the MAC is missing"):
        SecretsFile.load(str(path))


def test_newer_format_version_is_refused(tmp_path: Path, alice: Any) -> None:
    path = tmp_path / "prod.yaml"
    make_file(path, alice, {"A": "1"})
    doc = read_doc(path)
    doc["tectum"]["version"] = 2
    write_doc(path, doc)
    with pytest.raises(SecretsError, match="Upgrade tectum"):
        SecretsFile.load(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match=r"secrets/prod.yaml does not exist.*secrets init"):
        load_secrets(str(tmp_path), "prod", identities=[new_identity()])


# -- recipients and rotation -----------------------------------------------------------------


def test_add_recipient_keeps_values_and_lets_it_read(tmp_path: Path, alice: Any,
                                                     bob: Any) -> None:
    path = tmp_path / "prod.yaml"
    make_file(path, alice, {"A": "1"})
    before = read_doc(path)["secrets"]
    sf = SecretsFile.load(str(path))
    assert sf.add_recipient(public(bob), [alice]) == public(bob)
    sf.save()
    assert read_doc(path)["secrets"] == before
    assert SecretsFile.load(str(path)).decrypt([bob]) == {"A": "1"}
    with pytest.raises(SecretsError, match="is a recipient of .* already"):
        SecretsFile.load(str(path)).add_recipient(public(bob), [alice])


def test_remove_recipient_rotates_the_data_key(tmp_path: Path, alice: Any, bob: Any,
                                               canary: str) -> None:
    path = tmp_path / "prod.yaml"
    make_file(path, alice, {"A": canary, "B": "b"}, others=(bob,))
    old_data = data_identity_of(path, bob)  # what bob could have kept
    old_values = read_doc(path)["secrets"]

    sf = SecretsFile.load(str(path))
    assert sf.remove_recipient(public(bob), [alice]) == public(bob)
    sf.save()
    doc = read_doc(path)
    assert doc["tectum"]["recipients"] == [public(alice)]
    assert all(doc["secrets"][k] != old_values[k] for k in old_values), "all re-encrypted"

    # bob cannot open the file, nor its data key with pyrage directly...
    with pytest.raises(SecretsError, match="is a recipient of"):
        SecretsFile.load(str(path)).decrypt([bob])
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(base64.b64decode(doc["tectum"]["data_key"]), [bob])
    # ...nor any value with the data key he knew
    for ct in doc["secrets"].values():
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(base64.b64decode(ct), [old_data])
    assert SecretsFile.load(str(path)).decrypt([alice]) == {"A": canary, "B": "b"}
    # and a later change is just as closed to him
    sf = SecretsFile.load(str(path))
    sf.set("A", "new", [alice])
    sf.save()
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(base64.b64decode(read_doc(path)["secrets"]["A"]), [old_data])


def test_remove_recipient_refusals(tmp_path: Path, alice: Any, bob: Any) -> None:
    path = tmp_path / "prod.yaml"
    make_file(path, alice, {"A": "1"})
    before = path.read_bytes()
    with pytest.raises(SecretsError, match="only recipient"):
        SecretsFile.load(str(path)).remove_recipient(public(alice), [alice])
    with pytest.raises(SecretsError, match="is not a recipient of"):
        SecretsFile.load(str(path)).remove_recipient(public(bob), [alice])
    assert path.read_bytes() == before


def test_rotate(tmp_path: Path, alice: Any) -> None:
    path = tmp_path / "prod.yaml"
    make_file(path, alice, {"A": "1", "B": "2"})
    old = read_doc(path)
    old_data = data_identity_of(path, alice)
    sf = SecretsFile.load(str(path))
    sf.rotate([alice])
    sf.save()
    new = read_doc(path)
    assert new["tectum"]["data_key"] != old["tectum"]["data_key"]
    assert all(new["secrets"][k] != old["secrets"][k] for k in old["secrets"])
    assert str(data_identity_of(path, alice)) != str(old_data)
    assert SecretsFile.load(str(path)).decrypt([alice]) == {"A": "1", "B": "2"}


def test_recipient_validation(canary: str) -> None:
    private = str(new_identity())
    with pytest.raises(SecretsError, match="is a private key") as info:
        normalize_recipient(private)
    assert private not in str(info.value)
    for bad in ("ssh-rsa AAAAB3NzaC1yc2E foo", "hello", "age1notvalid", "", canary):
        with pytest.raises(SecretsError) as info:
            normalize_recipient(bad)
        if bad:
            assert bad not in str(info.value)
    assert normalize_recipient("  AGE1" + public(new_identity())[4:].upper() + " ").startswith(
        "age1")


# -- SSH keys ----------------------------------------------------------------------------------


def ssh_keygen(path: Path, passphrase: str = "") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "me@host",
                    "-f", str(path)], check=True)
    return Path(str(path) + ".pub").read_text().strip()


def test_ssh_ed25519_recipient_and_identity(tmp_path: Path, alice: Any, canary: str) -> None:
    key = tmp_path / "id_ed25519"
    pub = ssh_keygen(key)
    path = tmp_path / "secrets" / "prod.yaml"
    sf = SecretsFile.create(str(path), [pub, public(alice)])
    sf.set("A", canary, [alice])
    sf.save()
    assert pub in sf.recipients, "the comment is kept"

    keyring = load_keyring({"TECTUM_AGE_KEY_FILE": str(key)})
    assert keyring.public_keys == (" ".join(pub.split()[:2]),), "derived from the private key"
    assert SecretsFile.load(str(path)).decrypt(keyring) == {"A": canary}
    # ~/.ssh/id_ed25519 is the last place looked at
    home = tmp_path / "home"
    ssh_keygen(home / ".ssh" / "id_ed25519")
    keyring = load_keyring({"HOME": str(home)})
    assert keyring.source == str(home / ".ssh" / "id_ed25519")
    # the private key text itself in TECTUM_AGE_KEY works too
    keyring = load_keyring({"TECTUM_AGE_KEY": key.read_text()})
    assert SecretsFile.load(str(path)).get("A", keyring) == canary
    # removing the SSH recipient rotates it out
    sf = SecretsFile.load(str(path))
    sf.remove_recipient(pub, [alice])
    sf.save()
    with pytest.raises(SecretsError, match="is a recipient of"):
        SecretsFile.load(str(path)).decrypt(load_keyring({"TECTUM_AGE_KEY_FILE": str(key)}))


def test_passphrase_protected_ssh_key_is_explained(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    ssh_keygen(key, passphrase="correct horse")
    with pytest.raises(SecretsError, match="passphrase-protected SSH key"):
        load_keyring({"TECTUM_AGE_KEY_FILE": str(key)})


# -- key lookup --------------------------------------------------------------------------------


def _key_file(tmp_path: Path, *idents: Any) -> Path:
    path = tmp_path / f"key-{uuid.uuid4().hex[:8]}.txt"
    lines = ["# created: 2024-01-01T00:00:00Z"]
    for ident in idents:
        lines += [f"# public key: {public(ident)}", str(ident)]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def test_key_lookup_order(tmp_path: Path, alice: Any, bob: Any) -> None:
    home = tmp_path / "home"
    default = home / ".config" / "tectum" / "age" / "keys.txt"
    default.parent.mkdir(parents=True)
    default.write_text(f"# public key: {public(bob)}\n{bob}\n")
    ssh_keygen(home / ".ssh" / "id_ed25519")
    key_file = _key_file(tmp_path, alice, bob)

    both = load_keyring({"HOME": str(home), "TECTUM_AGE_KEY": f"# mine\n{alice}\n\n{bob}\n",
                         "TECTUM_AGE_KEY_FILE": str(key_file)})
    assert both.source == "TECTUM_AGE_KEY"
    assert both.public_keys == (public(alice), public(bob))

    from_file = load_keyring({"HOME": str(home), "TECTUM_AGE_KEY_FILE": str(key_file)})
    assert from_file.source == f"TECTUM_AGE_KEY_FILE={key_file}"
    assert from_file.public_keys == (public(alice), public(bob))

    assert load_keyring({"HOME": str(home)}).public_keys == (public(bob),)
    xdg = tmp_path / "xdg"
    (xdg / "tectum" / "age").mkdir(parents=True)
    (xdg / "tectum" / "age" / "keys.txt").write_text(str(alice) + "\n")
    assert load_keyring({"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}).public_keys == (
        public(alice),)
    default.unlink()
    assert load_keyring({"HOME": str(home)}).source.endswith("/.ssh/id_ed25519")
    assert len(load_identities({"HOME": str(home)})) == 1


def test_key_lookup_errors_never_show_the_key(tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    with pytest.raises(SecretsError, match="No private key found") as info:
        load_keyring({"HOME": str(home)})
    assert "TECTUM_AGE_KEY_FILE" in str(info.value) and "keygen" in str(info.value)

    with pytest.raises(SecretsError, match="Cannot read the private key file"):
        load_keyring({"TECTUM_AGE_KEY_FILE": str(tmp_path / "nope.txt")})

    secret_line = "hunter2-this-is-not-a-key"
    bad = tmp_path / "bad.txt"
    bad.write_text(f"# comment\n{secret_line}\n")
    with pytest.raises(SecretsError, match="Line 2 of .* is not an age identity") as info:
        load_keyring({"TECTUM_AGE_KEY_FILE": str(bad)})
    assert secret_line not in str(info.value)

    broken = str(new_identity())[:-5] + "QQQQQ"
    with pytest.raises(SecretsError, match="not a valid one") as info:
        load_keyring({"TECTUM_AGE_KEY": broken})
    assert broken not in str(info.value)
    with pytest.raises(SecretsError, match="holds no age identity"):
        load_keyring({"TECTUM_AGE_KEY_FILE": str(_key_file(tmp_path))})


def test_keyring_of_identities(alice: Any) -> None:
    ring = Keyring.of([alice])
    assert ring.public_keys == (public(alice),)
    assert Keyring.of(ring) is ring


# -- the plaintext form of `edit` ------------------------------------------------------------


def test_plaintext_yaml_round_trip(canary: str) -> None:
    values = {"A": canary, "B": "line 1\nline 2\n", "C": "no newline\nat end", "D": "",
              "E": "123", "F": "yes", "G": "  spaces  ", "H": "ä ✓", "I": "a: b # c",
              "J": "trailing  \nspace", "K": "x\n\n"}
    text = plaintext_yaml(values, "# header\n")
    assert text.startswith("# header\n")
    assert parse_plaintext_yaml(text, "edit") == values
    assert parse_plaintext_yaml("# only comments\n", "edit") == {}
    assert parse_plaintext_yaml(plaintext_yaml({}), "edit") == {}
    assert parse_plaintext_yaml("PORT: 5432\nX:\n", "edit") == {"PORT": "5432", "X": ""}


@pytest.mark.parametrize("text, message", [
    ("A: {canary}\nA: other\n", "line 2: A appears twice"),
    ("A: [{canary}]\n", "line 1: the value of A is a list or a mapping"),
    ("{canary}: x\n", "line 1: a secret name must be"),
    ("- {canary}\n", "expected a mapping"),
    ("A: \"{canary}\n", "not valid YAML"),
    ("A: {canary}: x\n", "line 1: this is not valid YAML"),
    ("A: *{canary}\n", "not valid YAML"),
])
def test_plaintext_yaml_errors_never_show_values(canary: str, text: str, message: str) -> None:
    with pytest.raises(SecretsError) as info:
        parse_plaintext_yaml(text.format(canary=canary.replace(" ", "_")), "the edited file")
    assert message in str(info.value)
    assert_no_canary(str(info.value), canary.replace(" ", "_"), "the error")
