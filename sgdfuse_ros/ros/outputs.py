"""What the node publishes beside each fused image: its ``camera_info`` and compressed copies.

Vehicle stacks expect of an image topic what camera drivers and image_pipeline give them:

* ``camera_info`` in the image topic's namespace (``/fused/image_raw`` ->
  ``/fused/camera_info``). The fused image is in the RGB camera's geometry, so its
  camera_info is the RGB camera's (``camera_info_topic``; default: ``camera_info`` beside
  ``rgb_topic`` as remapped), with the fused frame's header and scaled to the published
  image's size when the two differ (:func:`scaled_camera_info`). Without an incoming
  camera_info the node publishes none and says so once.
* ``<topic>/compressed``, the image_transport name that rviz and Foxglove read: JPEG
  (``publish_compressed``, ``jpeg_quality``) of the fused image and of the masks when they are
  published, with image_transport's ``format`` strings (:func:`jpeg_bytes`).

Every publisher and subscription of the node's image topics takes the ROS 2 QoS overrides
(``qos_overrides.<topic>.<publisher|subscription>.<policy>``, :func:`image_publishers`,
:func:`qos_factory` with :func:`overriding_options`). The camera_info subscription starts when
the node is configured (it only keeps the newest message). Importing
this module does not import rclpy (``bag fuse`` uses :func:`jpeg_bytes` offline).
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

#: ``sensor_msgs/CompressedImage.format`` of JPEG data, as image_transport's compressed plugin
#: writes it: the source encoding, then what the JPEG holds.
JPEG_FORMATS = {'rgb8': 'rgb8; jpeg compressed bgr8', 'mono8': 'mono8; jpeg compressed mono8'}


def sibling_topic(topic: str, name: str) -> str:
    """The topic ``name`` in the namespace of ``topic`` (``/rgb/image_raw`` ->
    ``/rgb/camera_info``), the image_transport rule for camera_info."""
    ns = topic.rsplit('/', 1)[0] if '/' in topic else ''
    return f'{ns}/{name}' if ns or topic.startswith('/') else name


def jpeg_bytes(image: np.ndarray, quality: int) -> tuple[bytes, str]:
    """``image`` (``uint8`` RGB ``H x W x 3`` or gray ``H x W``) as JPEG, and the
    CompressedImage ``format`` of it."""
    import cv2

    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f'JPEG output needs a uint8 RGB or gray image, got {image.dtype} '
                         f'{image.shape}')
    color = image.ndim == 3
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if color else image
    ok, buf = cv2.imencode('.jpg', data, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'OpenCV could not encode a {image.shape} image as JPEG')
    return buf.tobytes(), JPEG_FORMATS['rgb8' if color else 'mono8']


def scaled_camera_info(info, width: int, height: int, header):
    """A copy of ``info`` (sensor_msgs/CameraInfo) for an image of ``width x height`` in the
    same camera's geometry, with ``header``: K, P and the ROI scaled as image_proc's resize
    does when the sizes differ; distortion and rectification unchanged. An uncalibrated
    ``info`` (size 0) is only given the new size and header."""
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    out = CameraInfo(header=header, width=int(width), height=int(height),
                     distortion_model=info.distortion_model, d=list(info.d), k=list(info.k),
                     r=list(info.r), p=list(info.p), binning_x=info.binning_x,
                     binning_y=info.binning_y)
    roi = info.roi
    out.roi = RegionOfInterest(x_offset=roi.x_offset, y_offset=roi.y_offset, height=roi.height,
                               width=roi.width, do_rectify=roi.do_rectify)
    if not info.width or not info.height or (info.width, info.height) == (width, height):
        return out
    sx, sy = width / info.width, height / info.height
    k, p = list(info.k), list(info.p)
    k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
    p[0], p[2], p[3], p[5], p[6] = p[0] * sx, p[2] * sx, p[3] * sx, p[5] * sy, p[6] * sy
    out.k, out.p = k, p
    out.roi.x_offset, out.roi.width = round(roi.x_offset * sx), round(roi.width * sx)
    out.roi.y_offset, out.roi.height = round(roi.y_offset * sy), round(roi.height * sy)
    return out


def overriding_options():
    """rclpy's options that declare a topic's ``qos_overrides.<topic>.<publisher|subscription>``
    parameters of history, depth and reliability and apply them."""
    from rclpy.qos_overriding_options import QoSOverridingOptions

    return QoSOverridingOptions.with_default_policies()


def qos_factory(settings):
    """A function that makes a new QoS profile of the image topics (``qos_reliability``,
    ``qos_depth``) per call: with :func:`overriding_options` rclpy changes the profile it is
    given to the topic's overrides, so no two topics may share one."""
    from .graph import qos_profile

    return lambda: qos_profile(settings.qos_reliability, settings.qos_depth)


def image_publishers(node, settings, msg_type=None):
    """A function ``topic -> publisher`` of ``msg_type`` (default sensor_msgs/Image) on
    ``node`` with the image topics' QoS and the topic's ``qos_overrides`` parameters."""
    if msg_type is None:
        from sensor_msgs.msg import Image as msg_type
    qos = qos_factory(settings)
    return lambda topic: node.create_publisher(msg_type, topic, qos(),
                                               qos_overriding_options=overriding_options())


class Outputs:
    """The node's image publishers for one configuration and what goes beside them (see the
    module docstring). :attr:`images` are the publishers of the fused image, the masks and F1
    (``pub_fused, pub_ir_mask, pub_rgb_mask, pub_f1``; None when not published), which the
    node publishes on and destroys; :meth:`publish` sends the camera_info and JPEG copies of a
    fused frame, and :meth:`destroy` removes the publishers and subscription made for them."""

    def __init__(self, node, settings):
        from sensor_msgs.msg import CameraInfo, CompressedImage

        from .sync import LatestMessage

        self.node = node
        self.settings = settings
        self._said_no_info = False
        self.published_info = 0
        image = image_publishers(node, settings)
        pub_fused = image(settings.fused_topic)
        pub_ir_mask, pub_rgb_mask = ((image('~/ir_mask'), image('~/rgb_mask'))
                                     if settings.publish_masks else (None, None))
        pub_f1 = image('~/f1') if settings.publish_f1 else None
        #: ``pub_fused, pub_ir_mask, pub_rgb_mask, pub_f1``.
        self.images = (pub_fused, pub_ir_mask, pub_rgb_mask, pub_f1)
        fused_topic = pub_fused.topic_name
        self.pub_info = image_publishers(node, settings, CameraInfo)(
            sibling_topic(fused_topic, 'camera_info'))
        self.pub_fused_jpeg = None
        self.pub_masks_jpeg: list[Any] = []
        if settings.publish_compressed:
            jpeg = image_publishers(node, settings, CompressedImage)
            self.pub_fused_jpeg = jpeg(f'{fused_topic}/compressed')
            self.pub_masks_jpeg = [jpeg(f'{pub.topic_name}/compressed')
                                   for pub in (pub_ir_mask, pub_rgb_mask) if pub is not None]
        # The RGB camera's camera_info, beside rgb_topic as remapped unless named.
        topic = settings.camera_info_topic or sibling_topic(
            node.resolve_topic_name(settings.rgb_topic), 'camera_info')
        self.info_sub = LatestMessage(node, CameraInfo, topic, qos_factory(settings)(),
                                      qos_overriding_options=overriding_options())

    def publish(self, result, encoding: str, header) -> None:
        """After the node published a fused frame (``result``: the pipeline's
        :class:`~sgdfuse_ros.fusion.pipeline.FusionResult`; ``encoding``: the fused image's;
        ``header``: the RGB frame's): its camera_info, and the JPEG copies when asked for."""
        self.fused(result.image, encoding, header)
        self.masks(result.masks, header)

    def fused(self, image: np.ndarray, encoding: str, header) -> None:
        """The camera_info of the fused ``image`` (as published, ``encoding`` its encoding),
        and its JPEG when asked for."""
        h, w = image.shape[:2]
        info = self.info_sub.latest if self.info_sub is not None else None
        if info is not None:
            self.pub_info.publish(scaled_camera_info(info, w, h, header))
            self.published_info += 1
        elif not self._said_no_info:
            self._said_no_info = True
            self.node.get_logger().info(
                f'no camera_info on {self.info_sub.topic_name} yet: publishing none on '
                f'{self.pub_info.topic_name} until one comes (set camera_info_topic)')
        if self.pub_fused_jpeg is not None:
            self._publish_jpeg(self.pub_fused_jpeg, self._as_encoding(image, encoding), header)

    def masks(self, masks, header) -> None:
        """The JPEGs of the masks (thermal, RGB; float in [0, 1]) when masks and compressed
        output are both on."""
        if not self.pub_masks_jpeg or masks is None:
            return
        from .convert import float_to_mono8

        for pub, mask in zip(self.pub_masks_jpeg, masks):
            self._publish_jpeg(pub, float_to_mono8(mask), header)

    @staticmethod
    def _as_encoding(image: np.ndarray, encoding: str) -> np.ndarray:
        if encoding == 'mono8' and image.ndim == 3:
            from sgdfuse_ros.core import imaging
            return imaging.to_uint8(imaging.rgb_to_gray(image))
        return image

    def _publish_jpeg(self, pub, image: np.ndarray, header) -> None:
        from sensor_msgs.msg import CompressedImage

        data, fmt = jpeg_bytes(image, self.settings.jpeg_quality)
        msg = CompressedImage(header=header, format=fmt)
        msg.data = array.array('B', data)  # rclpy's fast path for uint8[]
        pub.publish(msg)

    def destroy(self) -> None:
        """Destroy the subscription and the publishers made here; harmless twice."""
        if self.info_sub is not None:
            self.info_sub.destroy()
            self.info_sub = None
        for pub in [self.pub_info, self.pub_fused_jpeg, *self.pub_masks_jpeg]:
            if pub is not None:
                try:
                    self.node.destroy_publisher(pub)
                except Exception:  # noqa: BLE001 - the node is being destroyed already
                    pass
        self.pub_info = self.pub_fused_jpeg = None
        self.pub_masks_jpeg = []


__all__ = ['JPEG_FORMATS', 'Outputs', 'image_publishers', 'jpeg_bytes', 'overriding_options',
           'qos_factory', 'scaled_camera_info', 'sibling_topic']
