"""Universal embedding of SOP + PKU VehicleID + In-shop by SND (paper 000 Combination 2, Table 3).

VehicleID: 13,134 training vehicles; the large test set (2,400 vehicles, 20,038 images) is used
(reader: tfembed.data.sources.read_vehicleid). Settings as snd_universal.
For the whole Table 3 add --set universal.methods=concat_pca,triplet_naive,triplet_ds,triplet_bal,rkd,snd

Command:
  tfembed-train --recipe snd_universal_sop_vid_inshop --set data_dir=/path/to/datasets
Expected result (000 Table 3, fused gallery, R@1/R@2/R@4): SOP 73.7/78.8/83.1,
VID 86.9/90.5/93.4, In-shop 82.9/88.3/92.3.
"""

from tfembed.configs._base import PAPER_UNIVERSAL_SMOKE, paper_universal

SMOKE = dict(PAPER_UNIVERSAL_SMOKE)


def get_config():
    c = paper_universal(["sop", "vehicleid", "inshop"])
    c.universal.methods = ["snd"]
    c.universal.export = ["snd"]
    return c
