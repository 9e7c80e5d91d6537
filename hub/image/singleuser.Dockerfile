# The single-user server image: JupyterHub's singleuser entrypoint on a debootstrap base.
# Wheels are downloaded on the host (the container cannot verify the registry's certificate).
FROM hubkeeper/base:bookworm
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /tmp/wheels jupyterhub jupyter_server \
 && rm -rf /tmp/wheels \
 && useradd --create-home --uid 1000 jovyan
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin
USER jovyan
WORKDIR /home/jovyan
CMD ["jupyterhub-singleuser"]
