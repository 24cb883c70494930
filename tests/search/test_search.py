"""Search by photo from the web and the API, against the real default pipeline over landmarks-mini."""

import re
import shutil

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from ml.pipeline import dense_store
from ml.spatial import LocalFeatureStore
from ml.stages.index_build import BuildSpec, build_record
from tests.conftest import MINI
from webapp.api.models import ApiToken
from webapp.catalog.models import Image
from webapp.curation import actions
from webapp.search.engine import search_photo
from webapp.search.models import EmbeddingSet, IndexVersion, SearchQuery
from webapp.search.services import packaged_model_version

pytestmark = pytest.mark.django_db
QUERY = MINI / "images" / "233e2de188985424.jpg"  # a London Bridge query (split 'query')
DAY = "b9d6a79e1feb8601"  # WxBS berlin by day, in the index; its night photo is a query


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


def upload(client, path=QUERY, url="search", **extra):
    with open(path, "rb") as f:
        return client.post(reverse(url), {"image": f, **extra}, **({} if url == "search" else {}))


def test_upload_names_the_landmark_and_ranks_its_photos_first(viewer_client, active_index):
    response = upload(viewer_client)
    assert response.status_code == 302
    query = SearchQuery.objects.get()
    assert response["Location"] == reverse("search-results", args=[query.uid])
    assert query.landmark.name == "london_bridge" and query.confidence > 0
    top = list(query.results.order_by("rank").values_list("image__landmark__name", flat=True)[:3])
    assert top == ["london_bridge"] * 3
    html = viewer_client.get(response["Location"]).content.decode()
    assert 'id="recognised">london_bridge<' in html and "Why this match" in html
    # The confidence is a calibrated probability, and the page says so (issue 23).
    assert 0 < query.confidence <= 1 and 'id="confidence-meaning"' in html and "below 0.45 no landmark" in html
    assert query.results.count() == 100 or query.results.count() == 145 or query.results.count() >= 100


def test_scores_are_probabilities_in_rank_order_and_verified_means_enough_matches(client, active_index, viewer_user):
    """Every path shows one score per result, the ranking key: in [0, 1] and never rising down the list,
    with labels (whose re-ranking moved photos of the recognised landmark up) and without; the evidence is
    separate, and "verified" needs enough matches, not a handful of chance inliers."""
    key = ApiToken.issue(viewer_user)
    pipeline = active_index.pipeline_config()
    for photo in (QUERY, MINI / "images" / "52992f5255f55c69.jpg"):
        with open(photo, "rb") as f:
            body = client.post("/api/search", {"image": f, "k": "100"}, HTTP_AUTHORIZATION=f"Token {key}").json()
        scores = [r["score"] for r in body["results"]]
        assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
        for r in body["results"]:
            enough = (r["inliers"] or 0) >= pipeline.verification.min_inliers \
                or (r["dense_inliers"] or 0) >= pipeline.dense.min_inliers
            assert r["verified"] == enough
        assert any(r["inliers"] and not r["verified"] for r in body["results"])  # chance inliers exist
    query = SearchQuery.objects.latest("created_at")
    client.force_login(viewer_user)
    html = client.get(reverse("search-results", args=[query.uid])).content.decode()
    assert 'type="range" name="min_score" min="0" max="1"' in html
    last = query.results.filter(verified=True).order_by("-rank").first()
    assert last is not None and html.index('id="verified-end"') > html.index(f'class="lm">{last.rank}. ')


def test_results_page_pages_and_filters_by_score(viewer_client, active_index, django_assert_max_num_queries):
    upload(viewer_client)
    query = SearchQuery.objects.get()
    url = reverse("search-results", args=[query.uid])
    with django_assert_max_num_queries(8):
        page1 = viewer_client.get(url).content.decode()
    assert "Page 1 of 5" in page1
    high = viewer_client.get(url, {"min_score": "0.7"}).content.decode()
    n_high = query.results.filter(score__gte=0.7).count()
    assert f"{n_high} result" in high and 0 < n_high < 100


def test_why_this_match_draws_inlier_lines(viewer_client, active_index):
    upload(viewer_client)
    query = SearchQuery.objects.get()
    best = query.results.order_by("rank").first()
    html = viewer_client.get(reverse("search-match", args=[query.uid, best.image.external_id])).content.decode()
    assert html.count('class="inlier"') >= 8 and "verified local matches" in html


def test_a_night_photo_finds_the_day_photo_by_dense_matching_and_says_so(viewer_client, active_index):
    upload(viewer_client, MINI / "images" / "52992f5255f55c69.jpg")  # WxBS berlin, illuminated at night
    query = SearchQuery.objects.get()
    day = query.results.get(image__external_id="b9d6a79e1feb8601")  # the same building by day
    assert day.dense_inliers >= 20 and day.rank <= 3
    assert f"{day.dense_inliers} feature-map matches" in viewer_client.get(
        reverse("search-results", args=[query.uid])).content.decode()
    html = viewer_client.get(reverse("search-match", args=[query.uid, "b9d6a79e1feb8601"])).content.decode()
    # redrawn from the stored (re-encoded) photo: about the count the search found
    drawn = int(re.search(r'id="dense-count">(\d+)<', html).group(1))
    assert drawn >= 20 and html.count('class="dense"') == drawn
    # RootSIFT cannot verify this pair: the page credits dense matching, not appearance alone
    assert 'id="dense-note"' in html and "global appearance alone" not in html


def test_a_lost_or_damaged_feature_file_leaves_its_photo_unverified_and_why_this_match_redraws_it(
        viewer_client, imported_mini, mini_index_files, tmp_path):
    """The day photo's cached RootSIFT file is gone and its dense one cut short: the search still answers
    (that photo unverified), and "why this match" computes its features from the photo instead."""
    features = tmp_path / "features"
    shutil.copytree(mini_index_files["features"], features)  # the session's files stay whole
    pipeline = mini_index_files["pipeline"]
    LocalFeatureStore(features, pipeline.local_features).path(DAY).unlink()
    dense_store(pipeline, features).path(DAY).write_bytes(b"cut short")
    (tmp_path / "index").symlink_to(mini_index_files["index"])  # another path: this process loads it afresh
    es = EmbeddingSet.objects.create(model_version=packaged_model_version("+".join(pipeline.models)), path="",
                                     dim=0, image_count=mini_index_files["count"])
    IndexVersion.objects.create(embedding_set=es, path=str(tmp_path / "index"), is_active=True,
                                size=mini_index_files["count"],
                                params={"pipeline": pipeline.name, **build_record(
                                    BuildSpec(pipeline, str(features), "", str(tmp_path / "index")))})

    assert upload(viewer_client, MINI / "images" / "52992f5255f55c69.jpg").status_code == 302
    query = SearchQuery.objects.get()
    day = query.results.get(image__external_id=DAY)
    assert day.inliers is None and day.dense_inliers is None  # unverified, not an error
    assert query.results.filter(inliers__isnull=False).exclude(image__external_id=DAY).exists()
    html = viewer_client.get(reverse("search-match", args=[query.uid, DAY])).content.decode()
    assert int(re.search(r'id="dense-count">(\d+)<', html).group(1)) >= 20  # made from the photo


def test_options_rerun_the_same_photo(viewer_client, active_index):
    upload(viewer_client)
    first = SearchQuery.objects.get()
    response = viewer_client.post(reverse("search-rerun", args=[first.uid]), {"use_labels": "on"})
    second = SearchQuery.objects.exclude(pk=first.pk).get()
    assert response["Location"] == reverse("search-results", args=[second.uid])
    assert second.options == {"verify": False, "query_expansion": False, "use_labels": True}
    assert second.results.filter(inliers__isnull=False).count() == 0  # nothing verified this time
    assert first.results.filter(inliers__isnull=False).exists()


def test_non_images_get_a_clear_error(viewer_client, active_index, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    response = upload(viewer_client, fake)
    assert response.status_code == 400 and "“photo.jpg” cannot be searched: not an image" in response.content.decode()
    assert not SearchQuery.objects.exists()


def test_no_index_yet_is_explained(viewer_client, imported_mini):
    response = upload(viewer_client)
    html = " ".join(response.content.decode().split())
    assert response.status_code == 503 and "No search index yet: photos cannot be searched until one is built." in html
    assert "An administrator can start “Build index” to make the search index." in html and "manage.py" not in html


def test_history_lists_only_my_searches(viewer_client, active_index, client, curator_user):
    upload(viewer_client)
    assert "london_bridge" in viewer_client.get(reverse("search-history")).content.decode()
    client.force_login(curator_user)
    assert "No searches yet" in client.get(reverse("search-history")).content.decode()


def test_relabel_changes_recognition_without_rebuilding(active_index, curator_user):
    from PIL import Image as PILImage

    photo = PILImage.open(QUERY).convert("RGB")
    assert search_photo(photo).landmark_id == "1"
    bridge = list(Image.objects.filter(landmark__external_id="1", split="index"))
    actions.mark_not_landmark(bridge, acting_user=curator_user, reason="test")
    assert search_photo(photo).landmark_id != "1"


def test_anonymous_search_only_when_public(client, active_index, settings):
    assert upload(client).status_code == 302 and "/accounts/login/" in upload(client)["Location"]
    settings.SEARCH_PUBLIC = True
    response = upload(client)
    assert response.status_code == 302 and "/search/" in response["Location"]
    assert client.get(response["Location"]).status_code == 200  # the session that ran it may open it ...
    assert Client().get(response["Location"]).status_code == 404  # ... another visitor may not


def test_anonymous_api_search_answers_with_a_share_link(client, active_index, settings):
    settings.SEARCH_PUBLIC = True
    with open(QUERY, "rb") as f:
        body = client.post("/api/search", {"image": f}).json()
    query = SearchQuery.objects.get()
    assert query.user is None and query.share_token
    assert body["query_url"] == f"http://testserver/search/shared/{query.share_token}/"
    assert Client().get(body["query_url"]).status_code == 200


# --- API --------------------------------------------------------------------------------------------

def test_api_search_with_token(client, active_index, viewer_user):
    key = ApiToken.issue(viewer_user)
    with open(QUERY, "rb") as f:
        response = client.post("/api/search", {"image": f, "k": "5"}, HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200
    body = response.json()
    assert body["landmark"]["id"] == "1" and body["landmark"]["name"] == "london_bridge"
    assert 0 < body["landmark"]["confidence"] <= 1
    assert len(body["results"]) == 5 and set(body["results"][0]) == {
        "image_id", "landmark_id", "score", "global_score", "inliers", "dense_inliers", "verified"}
    assert body["results"][0]["landmark_id"] == "1" and isinstance(body["results"][0]["inliers"], int)
    assert body["query_url"].startswith("http://testserver/search/")
    assert body["index_version"] == active_index.pk


def test_api_phone_sized_upload_is_decoded_no_larger_than_the_search_needs(client, active_index, viewer_user):
    import io

    from PIL import Image as PILImage

    from webapp.search import engine

    engine.current_engine()  # loaded: the process knows the sizes its pipeline looks at
    side = engine.decode_side()
    photo = PILImage.open(QUERY)
    big = photo.resize((photo.width * 4, photo.height * 4))  # 3068 x 4096, like a phone's 12 MP
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    buf.seek(0)
    buf.name = "phone.jpg"
    key = ApiToken.issue(viewer_user)
    body = client.post("/api/search", {"image": buf}, HTTP_AUTHORIZATION=f"Token {key}").json()
    assert body["landmark"]["name"] == "london_bridge"
    with SearchQuery.objects.get().photo.open("rb") as f:
        stored = PILImage.open(f).size
    assert side <= min(stored) and max(stored) < 4096  # decoded at reduced scale, still covering the pipeline


def test_api_token_last_used_is_written_once_a_minute(client, active_index, viewer_user, django_assert_num_queries):
    key = ApiToken.issue(viewer_user)
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    client.get("/api/landmarks/1", **auth)
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    with django_assert_num_queries(3):  # the token with its user, the landmark, its image count: no write
        assert client.get("/api/landmarks/1", **auth).status_code == 200
    assert ApiToken.objects.get().last_used_at == first


def test_api_refuses_missing_or_bad_tokens_and_bad_k(client, active_index, viewer_user, settings):
    assert client.post("/api/search").status_code == 401
    assert client.post("/api/search", HTTP_AUTHORIZATION="Token nope").status_code == 401
    key = ApiToken.issue(viewer_user)
    with open(QUERY, "rb") as f:
        assert client.post("/api/search", {"image": f, "k": "101"}, HTTP_AUTHORIZATION=f"Token {key}").status_code == 400
    assert client.get("/api/landmarks/1").status_code == 401
    settings.SEARCH_PUBLIC = True
    with open(QUERY, "rb") as f:
        assert client.post("/api/search", {"image": f}).status_code == 200
    assert client.get("/api/landmarks/1").status_code == 401  # only search opens up


def test_api_metadata(client, active_index, viewer_user):
    key = ApiToken.issue(viewer_user)
    auth = {"HTTP_AUTHORIZATION": f"Token {key}"}
    lm = client.get("/api/landmarks/1", **auth).json()
    assert lm["name"] == "london_bridge" and lm["images"] == 4
    im = client.get("/api/images/233e2de188985424", **auth).json()
    assert im["landmark_id"] == "1" and im["split"] == "query" and (im["width"], im["height"]) == (767, 1024)
    assert client.get("/api/images/nope", **auth).status_code == 404


def test_token_from_profile_page_and_command(viewer_client, viewer_user, capsys):
    html = viewer_client.post(reverse("profile")).content.decode()
    key = html.split('id="api-key">')[1].split("<")[0]
    assert ApiToken.objects.get(user=viewer_user).prefix == key[:8]
    call_command("create_api_token", "viewer")
    new_key = capsys.readouterr().out.strip()
    assert new_key != key and ApiToken.objects.get(user=viewer_user).prefix == new_key[:8]


def test_uploads_are_rate_limited_per_user(viewer_client, active_index, settings, client, curator_user):
    settings.SEARCH_RATE_LIMIT = 2
    assert upload(viewer_client).status_code == 302
    assert upload(viewer_client).status_code == 302
    third = upload(viewer_client)
    assert third.status_code == 429 and "Too many searches" in third.content.decode() and third["Retry-After"]
    client.force_login(curator_user)  # another user has their own allowance
    assert upload(client).status_code == 302


def test_a_burst_across_the_minute_is_still_limited(rf, settings, monkeypatch, viewer_user):
    from webapp.search import ratelimit

    settings.SEARCH_RATE_LIMIT = 2
    request = rf.post("/search/")
    request.user = viewer_user
    clock = [120 * 60 + 59.0]  # one second before a minute ends
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    assert ratelimit.allow_search(request)[0] and ratelimit.allow_search(request)[0]
    clock[0] += 2  # the next minute has begun: a fixed window would allow two more here
    assert not ratelimit.allow_search(request)[0]
    clock[0] += 60
    assert ratelimit.allow_search(request)[0]
