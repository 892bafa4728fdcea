# Two commands a user needs: `make run` (the main job on the sample set) and `make test`.
# Both create .venv and install everything on a machine with only Python 3.11 and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install clean milvus-venv screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dlib,milvus,eval,openvino,ray]'
	touch $(STAMP)

install: $(STAMP)

DEMO_HOME := .facesearch-demo

run: $(STAMP)
	$(BIN)/facesearch models
	@echo
	$(BIN)/facesearch detect samples/group/wider_group.jpg --draw $(DEMO_HOME)/wider_group_faces.png
	@echo
	$(BIN)/facesearch verify samples/lfw/Colin_Powell_0001.jpg samples/lfw/Colin_Powell_0002.jpg
	@echo
	$(BIN)/facesearch verify samples/lfw/Colin_Powell_0001.jpg samples/lfw/George_W_Bush_0001.jpg
	@echo
	$(BIN)/facesearch index samples/lfw samples/group --collection samples --home $(DEMO_HOME)
	@echo
	$(BIN)/facesearch search samples/probes/Serena_Williams_0003.jpg --home $(DEMO_HOME) --top-k 3 \
		--purpose "demo: find the probe's person" --case DEMO-1
	@echo
	$(BIN)/facesearch search samples/probes/Tony_Blair_0001.jpg --home $(DEMO_HOME) --top-k 3 \
		--purpose "demo: someone not in the set" --case DEMO-1
	@echo
	$(BIN)/facesearch doctor --home $(DEMO_HOME)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz

# The real Milvus standalone server (PyPI wheel milvus 2.3.5) needs its own venv; the tests start it.
MILVUS_VENV := build/milvus-venv

milvus-venv: $(STAMP)
	$(BIN)/python -c "from facesearch.index.milvus_standalone import ensure_venv; ensure_venv()"

test: lint milvus-venv
	bash scripts/ensure-chromium.sh  # the browser tests drive Debian's chromium
	$(BIN)/python -m pytest

# The browser tests write their screenshots to build/screenshots (git-ignored: `make test` leaves
# the work tree clean); after looking at them, copy the ones the README shows into docs/screenshots.
screenshots:
	@for f in docs/screenshots/*.png; do n=$$(basename $$f); \
		if [ -f build/screenshots/$$n ]; then cp build/screenshots/$$n $$f && echo "updated $$f"; fi; done

clean:
	rm -rf $(VENV) .pytest_cache $(DEMO_HOME) $(MILVUS_VENV)
