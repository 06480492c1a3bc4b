"""Image stores: spec parsing, URL table, layouts, credentials, GCS errors (real emulator)."""
from __future__ import annotations

import socket

import pytest

from pipeline.images import stores
from pipeline.cli import UserError
from pipeline.images.stores import (FolderStore, GcsStore, ImageRef, ObjectInfo, UrlStore, credential_status,
                                    layout_candidates, open_store, transfer_name, validate_bucket_name)
from pipeline.transfer import FetchFailed, PartFile, file_md5
from tests.support.httpserver import FileServer

IMAGE = ImageRef(image_id="4fa8054781a4c382", subset="train",
                 original_url="https://farm3.staticflickr.com/5310/5898076654_51085e157c_o.jpg",
                 thumbnail_url="https://c1.staticflickr.com/6/5310/5898076654_00643a940c_z.jpg",
                 original_size=4405052, original_md5="KFukvivpCM5QXl5SqKe41g==")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------- open_store


def test_open_store_empty_spec_is_one_sentence():
    with pytest.raises(UserError, match="no image source given"):
        open_store("  ")


def test_open_store_gs_spec():
    store = open_store("gs://oi-images/transfer/2024/")
    assert isinstance(store, GcsStore)
    assert (store.bucket_name, store.prefix, store.spec) == ("oi-images", "transfer/2024", "gs://oi-images/transfer/2024")
    assert open_store("gs://oi-images").spec == "gs://oi-images"


@pytest.mark.parametrize("name", ["", "ab", "Upper", "bad_end-", "-start", "a" * 64, "192.168.1.1",
                                  "goog-images", "my-google-bucket", "has space", "a..b"])
def test_invalid_bucket_names(name):
    with pytest.raises(UserError, match="is not a valid bucket name"):
        validate_bucket_name(name)


@pytest.mark.parametrize("name", ["abc", "oi-images_2024", "a" * 63, "images.example.com"])
def test_valid_bucket_names(name):
    validate_bucket_name(name)


def test_open_store_invalid_bucket():
    with pytest.raises(UserError, match=r"'Bad_Bucket' is not a valid bucket name"):
        open_store("gs://Bad_Bucket/x")


def test_open_store_urls_flavours(monkeypatch):
    monkeypatch.delenv(stores.BASE_URL_ENV, raising=False)
    assert open_store("urls").flavour == "cvdf"
    assert open_store("urls:original").flavour == "original"
    assert open_store("urls:thumbnail").flavour == "thumbnail"
    mirror = open_store("https://mirror.example/oid/")
    assert (mirror.flavour, mirror.base_url) == ("cvdf", "https://mirror.example/oid")
    with pytest.raises(UserError, match="unknown URL flavour 'flickr'"):
        open_store("urls:flickr")


def test_open_store_folder(tmp_path):
    assert isinstance(open_store(str(tmp_path)), FolderStore)
    with pytest.raises(UserError, match="is not a folder"):
        open_store(str(tmp_path / "nope"))
    assert open_store(str(tmp_path / "new"), must_exist=False).root == tmp_path / "new"


# ----------------------------------------------------------------- URL table and layouts


def test_url_for_each_flavour(monkeypatch):
    monkeypatch.delenv(stores.BASE_URL_ENV, raising=False)
    assert UrlStore("cvdf").url_for(IMAGE) == "https://s3.amazonaws.com/open-images-dataset/train/4fa8054781a4c382.jpg"
    assert UrlStore("original").url_for(IMAGE) == IMAGE.original_url
    assert UrlStore("thumbnail").url_for(IMAGE) == IMAGE.thumbnail_url
    assert UrlStore("thumbnail").url_for(ImageRef("00aa", "test")) == ""


def test_url_for_with_base_url_and_env(monkeypatch):
    monkeypatch.delenv(stores.BASE_URL_ENV, raising=False)
    assert UrlStore("cvdf", "http://127.0.0.1:9/m/").url_for(IMAGE) == "http://127.0.0.1:9/m/train/4fa8054781a4c382.jpg"
    assert UrlStore("original", "http://h").url_for(IMAGE) == \
        "http://h/farm3.staticflickr.com/5310/5898076654_51085e157c_o.jpg"
    monkeypatch.setenv(stores.BASE_URL_ENV, "http://env-mirror")
    assert UrlStore("cvdf").url_for(IMAGE) == "http://env-mirror/train/4fa8054781a4c382.jpg"


def test_transfer_name_is_host_and_path():
    assert transfer_name("https://farm3.staticflickr.com/5310/x_o.jpg") == "farm3.staticflickr.com/5310/x_o.jpg"


def test_layout_candidates_order_and_meaning():
    assert layout_candidates(ImageRef("00aa", "validation")) == [
        ("validation/00aa.jpg", None), ("00aa.jpg", None),
        ("s3.amazonaws.com/open-images-dataset/validation/00aa.jpg", False)]
    assert layout_candidates(IMAGE)[0] == ("farm3.staticflickr.com/5310/5898076654_51085e157c_o.jpg", True)


def test_url_store_missing_thumbnail_is_a_failure_not_a_crash():
    with pytest.raises(FetchFailed) as caught:
        UrlStore("thumbnail").locate(ImageRef("00aa", "test"))
    assert (caught.value.reason, caught.value.detail) == ("no url", "00aa has no Thumbnail300KURL")


def test_url_store_check_without_network():
    store = UrlStore("cvdf", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(UserError, match=r"cannot reach 127\.0\.0\.1 \(connection refused or no network\)"):
        store.check(IMAGE)


def test_folder_store_locates_layouts_and_originals(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "00aa.jpg").write_bytes(b"12345")
    (tmp_path / "00bb.jpg").write_bytes(b"123")
    store = FolderStore(tmp_path)
    first = store.locate(ImageRef("00aa", "train", original_size=5))
    assert (first.key, first.size, first.holds_original) == (str(tmp_path / "train" / "00aa.jpg"), 5, True)
    second = store.locate(ImageRef("00bb", "test", original_size=99))
    assert (second.key, second.holds_original) == (str(tmp_path / "00bb.jpg"), False)
    with pytest.raises(FetchFailed, match="00cc is not in"):
        store.locate(ImageRef("00cc", "train"))


# ----------------------------------------------------------------- credentials


def _no_credentials(monkeypatch, tmp_path):
    for name in (stores.EMULATOR_ENV, stores.CREDENTIALS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr(stores, "_on_gce", lambda: False)  # this machine's DMI name is not ours to set


def test_credential_status_anonymous(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    assert credential_status() == ("Anonymous access only: public buckets can be read; for private ones set "
                                   "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                                   "`gcloud auth application-default login`.")


def test_credential_status_key_file_missing_and_present(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    key = tmp_path / "key.json"
    monkeypatch.setenv(stores.CREDENTIALS_ENV, str(key))
    assert credential_status() == (f"GOOGLE_APPLICATION_CREDENTIALS points at {key}, which does not exist: "
                                   "only public buckets can be read.")
    key.write_text("{}")
    assert credential_status() == ("Application default credentials found: the service-account key in "
                                   "GOOGLE_APPLICATION_CREDENTIALS.")


def test_credential_status_gcloud_login(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    adc = tmp_path / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir()
    adc.write_text("{}")
    assert credential_status() == f"Application default credentials found: gcloud's login in {adc}."


def test_credential_status_emulator(monkeypatch):
    monkeypatch.setenv(stores.EMULATOR_ENV, "http://127.0.0.1:9023")
    assert credential_status() == "Using the GCS emulator at http://127.0.0.1:9023; no credentials are needed."


# ----------------------------------------------------------------- GCS (real emulator, real HTTP)


def test_gcs_private_bucket_without_credentials(monkeypatch):
    """A real HTTP endpoint answering 403 as GCS does for a private bucket and an anonymous caller."""
    with FileServer() as server:
        monkeypatch.setenv(stores.EMULATOR_ENV, server.url)
        monkeypatch.delenv(stores.CREDENTIALS_ENV, raising=False)
        server.fail("/storage/v1/b/private-oi/o", 403)
        with pytest.raises(UserError) as caught:
            GcsStore("private-oi", "x").check()
    message = str(caught.value)
    assert message.startswith("bucket private-oi is private and no Google credentials were found")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message and "gcloud auth application-default login" in message


def test_gcs_broken_key_file(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account"}')
    monkeypatch.setenv(stores.CREDENTIALS_ENV, str(key))
    with pytest.raises(UserError, match=r"^the Google credentials cannot be used \(Failed to load service account "
                                        r"credentials from .*key\.json\): check "
                                        r"GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`$"):
        GcsStore("some-bucket").check()


def test_gcs_unreachable(monkeypatch):
    monkeypatch.setenv(stores.EMULATOR_ENV, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(UserError, match=r"cannot reach http://127\.0\.0\.1:\d+ \(connection refused or no network\)"):
        GcsStore("any-bucket").check()


def test_gcs_missing_bucket(gcs_env):
    with pytest.raises(UserError, match="bucket no-such-bucket-oi does not exist"):
        GcsStore("no-such-bucket-oi").check()


def test_gcs_upload_list_download_roundtrip(gcs_env, tmp_path):
    from google.cloud import storage

    storage.Client().create_bucket("stores-roundtrip")
    store = GcsStore("stores-roundtrip", "data/v1")
    store.check()
    assert store.list_objects() == {}
    source = tmp_path / "labels.txt"
    source.write_bytes(b"0 0.5 0.5 0.2 0.2\n")
    info = store.upload(source, "yolo/a.txt")
    assert info == ObjectInfo(18, file_md5(source))
    assert store.list_objects() == {"yolo/a.txt": info}
    part = PartFile(tmp_path / "back.txt").open()
    store.download(store.object_location("yolo/a.txt", info), part)
    part.commit()
    assert (tmp_path / "back.txt").read_bytes() == source.read_bytes()
