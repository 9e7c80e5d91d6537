# hubkeeper's daemons in one image (production: deploy/compose.yaml). Built offline by
# hub/images.py: the project's wheel and its dependencies' wheels are made on the host.
FROM hubkeeper/base:bookworm
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/hubkeeper \
 && /opt/hubkeeper/bin/pip install --no-index --find-links /tmp/wheels hubkeeper \
 && rm -rf /tmp/wheels
ENV PATH=/opt/hubkeeper/bin:/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["hubkeeper"]
CMD ["--help"]
