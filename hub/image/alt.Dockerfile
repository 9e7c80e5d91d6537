# A second allowed image (users choose it with the "image" spawn option).
FROM hubkeeper/singleuser:latest
ENV HUBKEEPER_IMAGE_FLAVOUR=alt
