"""BTree structure helpers (pure inspection via __getstate__, no private C API)."""

from BTrees.LOBTree import LOBTree, LOBucket
from BTrees.IOBTree import IOBTree, IOBucket

_TREE_TYPES = (LOBTree, IOBTree)
_BUCKET_TYPES = (LOBucket, IOBucket)


def tree_nodes(tree):
    """-> (depth, [persistent node objects]) of a BTree.

    depth counts node levels on a root->bucket path: an empty tree is 0, a
    tree whose single bucket is inlined in its state is 2 (tree + embedded
    bucket), a tree whose children are buckets is 2, a tree whose children are
    trees whose children are buckets is 3, and so on. The node list contains
    `tree` itself and every persistent tree/bucket below it (buckets that are
    embedded in their tree's state have no oid and are not listed)."""
    nodes = [tree]
    state = tree.__getstate__()
    if state is None:
        return 0, nodes
    if len(state) == 1:             # ((bucket_state,),): single inline bucket
        return 2, nodes
    items = state[0]
    children = items[0::2]
    depths = set()
    for child in children:
        if isinstance(child, _TREE_TYPES):
            d, sub = tree_nodes(child)
            depths.add(d + 1)
            nodes.extend(sub)
        elif isinstance(child, _BUCKET_TYPES):
            child._p_activate()
            depths.add(2)
            nodes.append(child)
        else:
            raise ValueError('unexpected BTree child %r' % (child,))
    if len(depths) != 1:
        raise ValueError('BTree %r has leaves at different depths %s'
                         % (tree._p_oid, sorted(depths)))
    return depths.pop(), nodes


def tree_depth(tree):
    return tree_nodes(tree)[0]
