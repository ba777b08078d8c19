# SageMaker "bring your own container" image for the spleen segmentation app.
#
#   docker build -t ahi-spleen-seg .
#   docker run --rm -p 8080:8080 ahi-spleen-seg serve          # multi-model endpoint (POST /models, invoke)
#   docker run --rm -p 8080:8080 -e SAGEMAKER_MULTI_MODEL=false -v $PWD/model:/opt/ml/model ahi-spleen-seg serve
#                                                               # single model on /invocations (real-time / async)
#
# CUDA 13 runtime to match holoscan-cu13 and the cu130 torch build; Java 17 for multi-model-server; the project is
# installed by the same scripts/install.sh as on a laptop and in CI. Model weights are NOT in the image: they arrive
# as model.tar.gz (TargetModel) from S3.
ARG CUDA_BASE=nvidia/cuda:13.0.1-runtime-ubuntu22.04
FROM ${CUDA_BASE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="ahi-spleen-seg" \
      org.opencontainers.image.description="MONAI Deploy spleen CT segmentation on AWS HealthImaging, SageMaker MME"

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 (deadsnakes; Ubuntu 22.04 ships 3.10), Java 17 JRE for multi-model-server, OpenMP for torch on CPU,
# CUDA forward compatibility (/usr/local/cuda/compat; serve puts it on LD_LIBRARY_PATH only for older host drivers).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv openjdk-17-jre-headless libgomp1 \
      cuda-compat-13-0 \
 && apt-get purge -y --auto-remove gpg-agent software-properties-common \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/program
COPY . /opt/program

# The one install script: CUDA torch build, runtime pins only (no dev/test extras), no pip cache left behind.
RUN VENV=/opt/venv PYTHON=python3.11 TORCH_INDEX_URL=${TORCH_INDEX_URL} INSTALL_EXTRA="" scripts/install.sh \
 && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} + \
 && rm -rf /root/.cache

# Non-root runtime user; /opt/ml is where SageMaker mounts models (MME: /opt/ml/models, single: /opt/ml/model).
RUN useradd --system --uid 1000 --create-home --home-dir /home/model-server --shell /usr/sbin/nologin model-server \
 && mkdir -p /opt/ml/model /opt/ml/models \
 && chown -R model-server:model-server /opt/ml /home/model-server

ENV PATH=/opt/venv/bin:$PATH \
    SAGEMAKER_MULTI_MODEL=true \
    SAGEMAKER_BIND_TO_PORT=8080 \
    SPLEEN_BIND_HOST=0.0.0.0

USER model-server
EXPOSE 8080
ENTRYPOINT ["/opt/program/container/serve"]
CMD ["serve"]
