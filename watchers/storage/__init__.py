"""The storage watcher (``hubkeeper watch-storage``): notebook mounts, NFS, Owncloud."""
